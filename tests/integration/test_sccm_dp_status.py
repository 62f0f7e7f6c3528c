"""`SccmClient.read_dp_status` / `read_dp_messages` / `refresh_now` against the emulator over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from config.settings import ProviderSettings, RetryPolicy
from emulator.server import Emulator
from emulator.sms.provider import Provider
from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME, EmulatorFactory
from testing.waiting import wait_until
from worker.domain.distribution import DpState
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport

pytestmark = pytest.mark.integration

_BASIC_HTTP: dict[str, Any] = {"auth_modes": ("basic",), "allow_unencrypted": True}
_FAST_COPIES: dict[str, Any] = {"dp_copy_time_s": 0.05, "dp_retry_delay_s": 0.05, "dp_retry_count": 1}
_SETTLED_WITHIN_S = 10.0


def _client(emulator: Emulator) -> SccmClient:
    provider = ProviderSettings(
        endpoint=emulator.url,
        transport="basic",
        username=EMULATOR_USERNAME,
        password=SecretStr(EMULATOR_PASSWORD),
        operation_timeout_s=5,
        read_timeout_s=10,
        allow_unencrypted=True,
    )
    site = emulator.settings.site_code
    no_retries = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0)
    return SccmClient(ProviderTransport(site, provider), site, no_retries)


def _provider(emulator: Emulator) -> Provider:
    provider = emulator.provider
    assert isinstance(provider, Provider)  # the in-process emulator's own provider
    return provider


def test_450_packages_are_read_in_three_queries_with_every_dp_row(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(**_BASIC_HTTP, package_count=460, dp_count=4, pull_dp_count=1)
    client = _client(emulator)
    ids = [p["PackageID"] for p in emulator.provider.packages()][:450]
    before = emulator.provider.call_totals()["enumerates"]
    try:
        batch = client.read_dp_status(ids)
    finally:
        client.transport.close()
    assert emulator.provider.call_totals()["enumerates"] - before == 3
    assert (len(batch.rows), batch.rejected, batch.truncated) == (450 * 4, 0, False)
    assert {row.dp_name.split(".")[0] for row in batch.rows} == {"DP01", "DP02", "DP03", "DP04"}
    assert all(row.state is DpState.INSTALLED for row in batch.rows)


def test_a_read_stops_at_its_bound_and_releases_the_enumeration(emulator_factory: EmulatorFactory) -> None:
    emulator = emulator_factory(**_BASIC_HTTP, package_count=60)
    client = _client(emulator)
    ids = [p["PackageID"] for p in emulator.provider.packages()]
    try:
        batch = client.read_dp_status(ids, max_rows=7)
    finally:
        client.transport.close()
    assert (len(batch.rows), batch.truncated) == (7, True)
    assert _provider(emulator).open_enumerations()["contexts"] == 0


def test_a_failed_dp_is_read_as_failed_and_refresh_now_re_sends_it(emulator_factory: EmulatorFactory) -> None:
    """Offline DP02 fails; healed, refresh_now with the NAL path read from its row re-sends it."""
    emulator = emulator_factory(**_BASIC_HTTP, **_FAST_COPIES, package_count=30, dp_offline=("DP02",))
    provider = _provider(emulator)
    client = _client(emulator)
    package = next(p for p in provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] == "SMS_Package")
    package_id, v0 = package["PackageID"], package["SourceVersion"]
    try:
        assert client.refresh(package["class"], package_id) == 0

        def dp02() -> Any:
            return next(row for row in client.read_dp_status([package_id]).rows if row.dp_name.startswith("DP02"))

        assert wait_until(lambda: dp02().state is DpState.INSTALL_FAILED, timeout_s=_SETTLED_WITHIN_S)
        failed = dp02()
        assert (failed.source_version, failed.installed_at(v0 + 1)) == (v0, False)
        (message,) = [m for m in client.read_dp_messages([package_id]).messages if m.nal_path == failed.nal_path]
        assert message.message_state >= 3
        (counts,) = client.read_content_counts([package_id]).counts
        assert (counts.targeted, counts.success, counts.errors) == (5, 4, 1)
        provider.control_distribution(dp="DP02", offline=False)
        client.refresh_now(package_id, failed.nal_path, dp_site_code=failed.site_code)
        assert wait_until(lambda: dp02().installed_at(v0 + 1), timeout_s=_SETTLED_WITHIN_S)
        (counts,) = client.read_content_counts([package_id]).counts
        assert (counts.targeted, counts.success, counts.errors, counts.in_progress) == (5, 5, 0, 0)
    finally:
        client.transport.close()
    assert provider.distribution()["counters"]["jobs"] == 6  # five for the refresh, one re-send
