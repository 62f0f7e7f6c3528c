"""Tickets that expire while the worker runs are renewed before they do: no request fails.

The account's tickets live 15 s here (kadmin's maxlife), and the emulator closes a connection
idle for a second (HTTP.sys does after two minutes), so each refresh authenticates a new
connection with a new AP-REQ. A worker refreshing packages for twice the ticket life logs on
again when a third of the life is left, so every request is accepted at its first attempt and the
emulator sees several logons. Without the renewal, the first connection after the tickets expire
cannot be authenticated (libkrb5: "Ticket expired") and the requests fail.
"""

from __future__ import annotations

import time

import pytest

from testing.fixtures_emulator import make_emulator_settings
from testing.fixtures_kdc import KERBEROS_ACCOUNT, KerberosRealm
from testing.fixtures_pipeline import PipelineFactory

pytestmark = pytest.mark.integration

_SITE = "KR1"
_TICKET_LIFE_S = 15
_RUN_FOR_S = 2 * _TICKET_LIFE_S + 2
_EVERY_S = 1.5
_IDLE_CLOSE_S = 1.0


def test_tickets_expiring_mid_run_are_renewed_without_a_failed_request(
    pipeline_factory: PipelineFactory, kerberos_realm: KerberosRealm
) -> None:
    kerberos_realm.kdc.modify_principal(kerberos_realm.principal, f'-maxlife "{_TICKET_LIFE_S} seconds"')
    emulator_settings = make_emulator_settings(
        site_code=_SITE,
        auth_modes=("kerberos",),
        kerberos_keytab=str(kerberos_realm.service_keytab),
        username=KERBEROS_ACCOUNT,
        idle_timeout_s=_IDLE_CLOSE_S,
    )

    def providers(emulators: dict[str, object]) -> dict[str, dict[str, str]]:
        url = emulators[_SITE].url.replace("127.0.0.1", "localhost")  # type: ignore[attr-defined]
        return {
            _SITE: {
                "endpoint": url,
                "transport": "kerberos",
                "username": kerberos_realm.principal,
                "keytab_file": str(kerberos_realm.client_keytab),
                "operation_timeout_s": "5",
                "read_timeout_s": "8",
            }
        }

    pipeline = pipeline_factory(
        extra_emulators={_SITE: emulator_settings},
        extra_providers=providers,
        worker_extra_env=kerberos_realm.env,
        concurrency=1,
    )
    emulator = pipeline.emulators[_SITE]
    started = time.monotonic()
    runs = []
    while time.monotonic() - started < _RUN_FOR_S:
        pkg = pipeline.package(_SITE, pkg_source_flag=2)
        runs.append(pipeline.refresh(site_code=_SITE, package_id=pkg["PackageID"], package_class=pkg["class"]))
        time.sleep(_EVERY_S)
    assert [run.statuses for run in runs] == [["accepted"]] * len(runs)
    # The first logon and at least one renewal per ticket life that passed.
    assert emulator.stats.count("kerberos_authenticated") >= 3
    assert emulator.stats.count("auth_kerberos_failures") == 0
