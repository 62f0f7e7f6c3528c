"""Refresh requests end to end: real Redis, a real Celery worker process, the emulator over HTTP.

Every test checks the outcome three ways: the live pub/sub message, the durable stream entry
and the latest-state hash of the package.
"""

from __future__ import annotations

from typing import Any

import pytest

from testing.fixtures_pipeline import NON_LATIN1_PASSWORD, Pipeline, PipelineFactory, RefreshRun
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome
from worker.stores.outcome_reader import read_stream

pytestmark = pytest.mark.integration


def assert_recorded_everywhere(run: RefreshRun, status: str) -> None:
    """The final outcome arrived live, is in the stream exactly once, and is the package's state."""
    assert run.final is not None, f"no final outcome; live events: {run.statuses}"
    assert run.final.status == status, run.final.to_dict()
    finals_in_stream = [o for o in run.stream if o.final]
    assert finals_in_stream == [run.final]
    assert [o.status for o in run.stream] == run.statuses
    assert run.state is not None and run.state.final
    assert run.state.request_id == run.request_id and run.state.status == status
    assert run.state.outcome == run.final


def test_refresh_over_ntlm_is_accepted_and_source_version_rises(pipeline: Pipeline) -> None:
    """A plain package refreshed over NTLM + encryption ends source_updated with the new version."""
    pkg = pipeline.package("PS1", pkg_source_flag=2)
    calls_before = pipeline.emulators["PS1"].provider.call_log()["packages"].get(pkg["PackageID"], {})
    run = pipeline.refresh(site_code="PS1", package_id=pkg["PackageID"], package_class=pkg["class"], verify=True)
    assert_recorded_everywhere(run, "source_updated")
    final = run.final
    assert final is not None
    assert final.return_value == 0 and final.attempt == 1
    assert final.package_name == pkg["Name"]
    assert final.source_version_before is not None and final.source_version_after == final.source_version_before + 1
    calls = pipeline.emulators["PS1"].provider.call_log()["packages"][pkg["PackageID"]]
    assert calls["accepted"] == calls_before.get("accepted", 0) + 1
    assert pipeline.emulators["PS1"].stats.count("wsman_encrypted") > 0


def test_refresh_over_basic_is_accepted(pipeline: Pipeline) -> None:
    """Basic auth over HTTP (AllowUnencrypted) works the same way; without verify it ends accepted."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="BS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert_recorded_everywhere(run, "accepted")
    assert run.final is not None and run.final.source_version_after is None


def test_refresh_over_https_validates_the_certificate_against_the_configured_ca(pipeline: Pipeline) -> None:
    """Basic over HTTPS with ca_trust_path set to the emulator's CA: accepted."""
    pkg = pipeline.package("HS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="HS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert_recorded_everywhere(run, "accepted")


def test_untrusted_certificate_fails_at_once_as_a_configuration_error(pipeline: Pipeline) -> None:
    """A certificate that does not validate is a configuration problem, not a blip: no retries."""
    pkg = pipeline.package("HS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="HX1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert_recorded_everywhere(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "config"
    assert "certificate" in run.final.error["message"].lower()
    assert run.statuses == ["failed"]


def test_unknown_package_fails_at_once_as_not_found(pipeline: Pipeline) -> None:
    """A PackageID the provider does not have fails permanently after one attempt, no Invoke."""
    run = pipeline.refresh(site_code="PS1", package_id="PS1FFFFF", package_class="SMS_Package")
    assert_recorded_everywhere(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "not_found"
    assert run.final.attempts == 1 and run.statuses == ["failed"]
    assert "PS1FFFFF" not in pipeline.emulators["PS1"].provider.call_log()["packages"] or (
        pipeline.emulators["PS1"].provider.call_log()["packages"]["PS1FFFFF"]["invokes"] == 0
    )


def test_access_denied_on_one_package_fails_permanently(pipeline: Pipeline) -> None:
    """RBAC access denied on a package is permanent: failed with kind access_denied, no retry."""
    pkg = pipeline.package("PS1", pkg_source_flag=2, package_class="SMS_Package")
    provider = pipeline.emulators["PS1"].provider
    provider.deny_access(pkg["PackageID"])
    try:
        run = pipeline.refresh(site_code="PS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    finally:
        provider.allow_access(pkg["PackageID"])
    assert_recorded_everywhere(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "access_denied"
    assert run.statuses == ["failed"]


def test_bad_credentials_fail_at_once_without_a_retry_storm(pipeline: Pipeline) -> None:
    """A wrong password is one failed outcome (auth) after a handful of 401s, not a retry loop."""
    emulator = pipeline.emulators["PS1"]
    unauthorized_before = emulator.stats.count("http_401")
    pkg = pipeline.package("PS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="XP1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert_recorded_everywhere(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "auth"
    assert run.statuses == ["failed"]
    # NTLM's handshake answers 401 twice per attempt; one attempt, no in-call retry.
    assert emulator.stats.count("http_401") - unauthorized_before <= 3


def test_503s_and_timeouts_are_retried_until_the_refresh_succeeds(pipeline: Pipeline) -> None:
    """Transient faults beyond the in-call budget re-queue the task; it then succeeds."""
    emulator = pipeline.emulators["BS1"]
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    # 3 in-call tries per run: five faults exhaust the first run, the second run succeeds.
    emulator.faults.inject_next("http_503", count=3)
    emulator.faults.inject_next("timeout_fault", count=2)
    try:
        run = pipeline.refresh(site_code="BS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    finally:
        emulator.faults.clear()
    assert_recorded_everywhere(run, "accepted")
    assert run.statuses[0] == "retrying"
    retry = run.live[0]
    assert retry.error is not None and retry.error["kind"] in ("server_busy", "timeout")
    assert run.final is not None and run.final.attempt == 2


def test_medium_not_ready_is_retried_and_accepted_once_the_medium_is_ready(pipeline: Pipeline) -> None:
    """A STORAGE_COMPRESS package waits (retrying events) and completes when the medium is mounted."""
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    seen_retrying = []

    def mount_after_two_retries(outcome: object) -> None:
        seen_retrying.append(outcome)
        if len(seen_retrying) == 2:
            provider.set_medium_ready(pkg["PackageID"], True)

    run = pipeline.refresh(
        site_code="PS1", package_id=pkg["PackageID"], package_class=pkg["class"], on_event=mount_after_two_retries
    )
    assert_recorded_everywhere(run, "accepted")
    assert run.statuses[:2] == ["retrying", "retrying"]
    assert all(o.error is not None and o.error["kind"] == "medium_not_ready" for o in run.live[:-1])
    assert run.final is not None and run.final.attempt == len(run.live)
    assert run.live[0].next_retry_at is not None


def test_medium_never_ready_gives_up_when_the_policy_is_exhausted(pipeline: Pipeline) -> None:
    """With the medium never mounted, the request ends gave_up_medium_not_ready after 6 attempts."""
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    run = pipeline.refresh(site_code="PS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert_recorded_everywhere(run, "gave_up_medium_not_ready")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "medium_not_ready"
    # The test medium policy allows 6 attempts (the first included): 5 retrying events, then the end.
    assert run.statuses == ["retrying"] * 5 + ["gave_up_medium_not_ready"]
    assert run.final.return_value is not None and run.final.return_value != 0


def test_task_sequence_package_is_rejected_unless_forced(pipeline: Pipeline) -> None:
    """SMS_TaskSequencePackage is refused before any call to SCCM."""
    run = pipeline.refresh(site_code="PS1", package_id="PS100001", package_class="SMS_TaskSequencePackage")
    assert run.final is not None and run.final.status == "rejected"
    assert run.final.error is not None and "force" in run.final.error["message"]
    assert run.stream == [run.final]


def test_application_content_is_rejected_with_the_reason_and_never_invoked(pipeline: Pipeline) -> None:
    """SMS_ContentPackage ends `rejected`, saying to use the deployment type, with no call to SCCM."""
    emulator = pipeline.emulators["PS1"]
    content = next(p for p in emulator.provider.packages() if p["class"] == "SMS_ContentPackage")
    run = pipeline.refresh(site_code="PS1", package_id=content["PackageID"], package_class="SMS_ContentPackage")
    assert run.final is not None and run.final.status == "rejected" and run.stream == [run.final]
    assert run.final.package_class == "SMS_ContentPackage"
    assert run.final.error is not None and "deployment type" in run.final.error["message"]
    assert content["PackageID"] not in emulator.provider.call_log()["packages"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"site_code": "PS1", "package_id": "PS100001' OR '1'='1"}, "package_id"),
        ({"site_code": "P S", "package_id": "PS100001"}, "site_code"),
        ({"site_code": "PS1", "package_id": "PS100001", "package_class": "Win32_Process"}, "package_class"),
        ({"site_code": "ZZ9", "package_id": "ZZ900001"}, "no SMS Provider configured"),
        ({"site_code": "PS1", "package_id": "PS100001", "surprise": 1}, "unknown field"),
    ],
)
def test_bad_task_arguments_are_rejected_with_a_clear_error(
    pipeline: Pipeline, kwargs: dict[str, Any], fragment: str
) -> None:
    """Hostile or wrong kwargs sent straight to the queue get a 'rejected' outcome naming the problem."""
    run = pipeline.refresh(**kwargs)
    assert run.final is not None and run.final.status == "rejected"
    assert run.final.error is not None and fragment in run.final.error["message"]
    assert "Traceback" not in run.final.error["message"]


def test_wmi_generic_failure_is_retried_as_a_provider_failure(pipeline: Pipeline) -> None:
    """WBEM_E_FAILED on a plain package is transient: re-queued (provider_failure), then accepted."""
    emulator = pipeline.emulators["BS1"]
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    emulator.faults.inject_next("generic_failure", count=3)  # the whole in-call budget of the first run
    try:
        run = pipeline.refresh(site_code="BS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    finally:
        emulator.faults.clear()
    assert_recorded_everywhere(run, "accepted")
    assert run.statuses == ["retrying", "accepted"]
    error = run.live[0].error
    assert error is not None and error["kind"] == "provider_failure" and error["wmi_code"] == 0x80041001


def test_medium_not_ready_as_a_wmi_fault_carries_the_sms_extended_status(pipeline_factory: PipelineFactory) -> None:
    """With the provider failing RefreshPkgSource by a WMI fault, the wait and its details are the same."""
    pipeline = pipeline_factory(emulator_overrides={"PS1": {"medium_failure_mode": "fault"}}, concurrency=2)
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)

    def mount_on_first_retry(outcome: Outcome) -> None:
        if outcome.status == "retrying":
            provider.set_medium_ready(pkg["PackageID"], True)

    run = pipeline.refresh(
        site_code="PS1", package_id=pkg["PackageID"], package_class=pkg["class"], on_event=mount_on_first_retry
    )
    assert_recorded_everywhere(run, "accepted")
    retry = run.live[0]
    assert retry.status == "retrying" and retry.error is not None
    assert retry.error["kind"] == "medium_not_ready" and retry.error["wmi_code"] == 0x80041001
    assert retry.return_value is None  # a fault, not a ReturnValue
    extended = retry.error["extended_status"]
    assert extended is not None and extended["class"] == "SMS_ExtendedStatus"
    assert "medium" in (extended["description"] or "").lower()


def test_basic_password_requests_cannot_encode_fails_at_once_without_leaking(pipeline: Pipeline) -> None:
    """A non-Latin-1 Basic password (from a file) is a config failure; the secret appears nowhere."""
    pkg = pipeline.package("HS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="BL1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert_recorded_everywhere(run, "failed")
    assert run.final is not None and run.final.error is not None
    assert run.final.error["kind"] == "config" and "Latin-1" in run.final.error["message"]
    assert NON_LATIN1_PASSWORD not in run.final.to_json()
    assert NON_LATIN1_PASSWORD not in pipeline.worker.output()


def test_a_forged_retry_state_cannot_park_the_request(pipeline: Pipeline) -> None:
    """retry_state sent by a producer with not_before far in the future is ignored: refreshed now."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    run = pipeline.refresh(
        site_code="BS1",
        package_id=pkg["PackageID"],
        package_class=pkg["class"],
        retry_state={"not_before": 1e12, "attempts": 3},
    )
    assert_recorded_everywhere(run, "accepted")
    assert run.final is not None and run.final.attempt == 1


def test_a_request_delivered_again_after_its_final_outcome_does_nothing(pipeline: Pipeline) -> None:
    """The same request id sent again once it ended: no provider call, no new event."""
    provider = pipeline.emulators["BS1"].provider
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    kwargs = {"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]}
    run = pipeline.refresh(**kwargs)
    assert_recorded_everywhere(run, "accepted")
    invokes = provider.call_log()["packages"][pkg["PackageID"]]["invokes"]

    pipeline.send(kwargs, request_id=run.request_id)
    assert wait_until(
        lambda: f"request {run.request_id} already has its final outcome" in pipeline.worker.output(), timeout_s=15
    )
    assert provider.call_log()["packages"][pkg["PackageID"]]["invokes"] == invokes
    client = pipeline.outcome_redis()
    try:
        events = [e.outcome for e in read_stream(client, pipeline.keys, count=100_000)]
    finally:
        client.close()
    assert [o.status for o in events if o.request_id == run.request_id] == ["accepted"]
