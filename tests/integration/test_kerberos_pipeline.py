"""A refresh over Kerberos end to end: real KDC, real Redis, a real Celery worker, the emulator.

The worker process logs on in-process (a keytab, or a password file), asks the KDC for the
emulator's SPN (HTTP/localhost, from the endpoint), and pywinrm's own Kerberos transport seals
every message ([MS-WSMV] message encryption over plain HTTP). Each source gets its own worker
process: one process keeps one logon per account.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emulator.server import Emulator
from testing.fixtures_emulator import make_emulator_settings
from testing.fixtures_kdc import EMULATOR_SPN_HOST, KERBEROS_ACCOUNT, KERBEROS_PASSWORD, KerberosRealm
from testing.fixtures_pipeline import Pipeline, PipelineFactory, RefreshRun
from testing.leak_search import LeakSearch, snapshot_redis
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

_SITE = "KR1"


def _providers(
    realm: KerberosRealm, credentials: dict[str, str]
) -> Callable[[dict[str, Emulator]], dict[str, dict[str, str]]]:
    def providers(emulators: dict[str, Emulator]) -> dict[str, dict[str, str]]:
        endpoint = emulators[_SITE].url.replace("127.0.0.1", "localhost")
        common = {
            "transport": "kerberos",
            "username": realm.principal,
            "operation_timeout_s": "5",
            "read_timeout_s": "8",
        }
        return {
            _SITE: {"endpoint": endpoint, **common, **credentials},
            # The same listener, the ticket asked for an SPN the KDC does not know.
            "KW1": {"endpoint": endpoint, "spn": "HTTP/nosuch.sccm.test", **common, **credentials},
            # A second site's listener by its other SPN: a ticket not asked for until a test does.
            "KT1": {"endpoint": emulators["KT1"].url, "spn": f"HTTP/{EMULATOR_SPN_HOST}", **common, **credentials},
        }

    return providers


def _kerberos_pipeline(
    factory: PipelineFactory,
    realm: KerberosRealm,
    credentials: dict[str, str],
    *,
    worker_realm: KerberosRealm | None = None,
) -> Pipeline:
    """The emulator accepts `realm`'s tickets; the worker logs on in `worker_realm` (the same by default)."""
    emulators = {
        site: make_emulator_settings(
            site_code=site,
            auth_modes=("kerberos",),
            kerberos_keytab=str(realm.service_keytab),
            username=KERBEROS_ACCOUNT,
        )
        for site in (_SITE, "KT1")
    }
    return factory(
        extra_emulators=emulators,
        extra_providers=_providers(realm, credentials),
        worker_extra_env=(worker_realm or realm).env,
    )


@pytest.fixture(scope="module")
def keytab_pipeline(pipeline_factory: PipelineFactory, kerberos_realm: KerberosRealm) -> Pipeline:
    return _kerberos_pipeline(pipeline_factory, kerberos_realm, {"keytab_file": str(kerberos_realm.client_keytab)})


@pytest.fixture(scope="module")
def password_pipeline(pipeline_factory: PipelineFactory, kerberos_realm: KerberosRealm) -> Pipeline:
    return _kerberos_pipeline(pipeline_factory, kerberos_realm, {"password_file": str(kerberos_realm.password_file)})


@pytest.fixture(scope="module")
def skewed_pipeline(
    pipeline_factory: PipelineFactory, kerberos_realm: KerberosRealm, skewed_kerberos_realm: KerberosRealm
) -> Pipeline:
    credentials = {"keytab_file": str(skewed_kerberos_realm.client_keytab)}
    return _kerberos_pipeline(pipeline_factory, kerberos_realm, credentials, worker_realm=skewed_kerberos_realm)


def _assert_one_final(run: RefreshRun, status: str) -> None:
    assert run.final is not None, f"no final outcome; live events: {run.statuses}"
    assert run.final.status == status, (run.statuses, run.final.error)
    assert [o for o in run.stream if o.final] == [run.final]
    assert run.state is not None and run.state.outcome == run.final


@pytest.mark.parametrize("source", ["keytab", "password_file"])
def test_a_refresh_over_kerberos_with_message_encryption_is_accepted(
    source: str, request: pytest.FixtureRequest
) -> None:
    """From a keytab and from a password file: accepted, one final, every message sealed."""
    pipeline: Pipeline = request.getfixturevalue(f"{'keytab' if source == 'keytab' else 'password'}_pipeline")
    emulator = pipeline.emulators[_SITE]
    pkg = pipeline.package(_SITE, pkg_source_flag=2)
    run = pipeline.refresh(site_code=_SITE, package_id=pkg["PackageID"], package_class=pkg["class"])
    _assert_one_final(run, "accepted")
    assert run.final is not None and run.final.attempt == 1 and run.statuses == ["accepted"]
    assert emulator.provider.call_log()["packages"][pkg["PackageID"]]["accepted"] == 1
    assert emulator.stats.count("kerberos_authenticated") >= 1
    assert emulator.stats.count("wsman_encrypted") >= 2 and emulator.stats.count("wsman_plaintext") == 0
    log = pipeline.worker.output()
    assert KERBEROS_PASSWORD not in log and "Traceback" not in log


def test_an_spn_the_kdc_does_not_know_fails_once_with_a_clear_message(keytab_pipeline: Pipeline) -> None:
    """A wrong SPN is permanent: one attempt, failed, the message names the SPN and setspn."""
    pkg = keytab_pipeline.package(_SITE, pkg_source_flag=2)
    run = keytab_pipeline.refresh(site_code="KW1", package_id=pkg["PackageID"], package_class=pkg["class"])
    _assert_one_final(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "config" and run.statuses == ["failed"] and run.final.attempts == 1
    assert "HTTP/nosuch.sccm.test" in run.final.error["message"] and "setspn" in run.final.error["message"]


def test_clock_skew_against_the_kdc_fails_once_saying_to_sync_the_clock(skewed_pipeline: Pipeline) -> None:
    """The worker's clock 10 minutes off the KDC's: permanent, one attempt, the message says NTP."""
    emulator = skewed_pipeline.emulators[_SITE]
    pkg = skewed_pipeline.package(_SITE, pkg_source_flag=2)
    run = skewed_pipeline.refresh(site_code=_SITE, package_id=pkg["PackageID"], package_class=pkg["class"])
    _assert_one_final(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "config" and run.statuses == ["failed"] and run.final.attempts == 1
    assert "clock skew" in run.final.error["message"] and "NTP" in run.final.error["message"]
    assert emulator.stats.count("http_401") == 0 and pkg["PackageID"] not in emulator.provider.call_log()["packages"]


def test_a_stopped_kdc_is_retried_and_the_refresh_recovers_when_it_returns(
    keytab_pipeline: Pipeline, kerberos_realm: KerberosRealm
) -> None:
    """No KDC for a ticket the worker needs: transient (retrying), accepted once the KDC is back."""
    kdc = kerberos_realm.kdc
    pkg = keytab_pipeline.package("KT1", pkg_source_flag=2)

    def restart_on_first_retry(outcome: Outcome) -> None:
        if outcome.status == "retrying" and not kdc.running:
            kdc.start()

    kdc.stop()
    try:
        run = keytab_pipeline.refresh(
            site_code="KT1", package_id=pkg["PackageID"], package_class=pkg["class"], on_event=restart_on_first_retry
        )
    finally:
        kdc.start()
    _assert_one_final(run, "accepted")
    assert run.statuses[0] == "retrying" and run.statuses[-1] == "accepted"
    first = run.live[0]
    assert first.error is not None and first.error["kind"] == "connect" and "KDC" in first.error["message"]


def test_the_kerberos_password_is_nowhere_in_redis_the_outcomes_or_the_worker_log(
    password_pipeline: Pipeline, kerberos_realm: KerberosRealm
) -> None:
    """After refreshes from a password file (one failing on a wrong SPN): no encoding of the password
    in any Redis key or value (queues, outcomes, markers) nor in the worker's log."""
    pkg = password_pipeline.package(_SITE, pkg_source_flag=2)
    for site in (_SITE, "KW1"):
        run = password_pipeline.refresh(site_code=site, package_id=pkg["PackageID"], package_class=pkg["class"])
        assert run.final is not None
    search = LeakSearch.for_secrets({"kerberos password": KERBEROS_PASSWORD}, username=kerberos_realm.principal)
    blobs: dict[str, bytes | str] = dict(snapshot_redis(password_pipeline.redis_url).blobs)
    blobs["worker log"] = password_pipeline.worker.output()
    assert search.report(blobs) == {}
