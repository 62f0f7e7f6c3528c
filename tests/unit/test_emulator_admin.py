"""The admin routes (emulator.admin.AdminApi) over a real Provider, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from emulator.admin import AdminApi
from emulator.concurrency import ConcurrencyMeter
from emulator.fault_injection import FaultPlan
from emulator.settings import EmulatorSettings
from emulator.sms.packages import STORAGE_DIRECT
from emulator.sms.provider import Provider
from emulator.stats import ServerStats
from testing.fixtures_emulator import FakeClock
from testing.wsman_requests import invoke_envelope, return_value

_SETTINGS = EmulatorSettings(package_count=30, distmgr_threads=2, distmgr_time_per_package_s=10.0)


@pytest.fixture
def provider() -> Provider:
    clock = FakeClock()
    return Provider(_SETTINGS, clock=clock.monotonic, wall_clock=clock.wall)


@pytest.fixture
def admin(provider: Provider) -> AdminApi:
    return AdminApi(
        provider=provider,
        faults=FaultPlan(),
        stats=ServerStats(),
        concurrency=ConcurrencyMeter(),
        describe=lambda: {},
    )


def call(admin: AdminApi, method: str, route: str, body: Any = None) -> tuple[int, Any]:
    answer = admin.handle(method, "/admin/" + route, b"" if body is None else json.dumps(body).encode())
    return answer.status, json.loads(answer.body())


def refresh_all_direct(provider: Provider, count: int) -> None:
    packages = [p for p in provider.packages() if p["PkgSourceFlag"] == STORAGE_DIRECT and p["class"] == "SMS_Package"]
    for package in packages[:count]:
        envelope = invoke_envelope("http://e/wsman", _SETTINGS.site_code, package["PackageID"])
        assert return_value(provider.handle(envelope.encode(), user=_SETTINGS.username).body) == 0


def test_distmgr_route_reports_queue_and_settings(admin: AdminApi, provider: Provider) -> None:
    """GET /admin/distmgr: threads, time per package, processing and queued counts."""
    refresh_all_direct(provider, 3)
    status, body = call(admin, "GET", "distmgr")
    assert status == 200
    expected = {"threads": 2, "time_per_package_s": 10.0, "processing": 2, "queued": 1, "processed": 0}
    assert {key: body[key] for key in expected} == expected


def test_distmgr_post_holds_drains_and_sets_the_time(admin: AdminApi, provider: Provider) -> None:
    """POST /admin/distmgr applies time_per_package_s, hold and drain, and answers the new state."""
    status, body = call(admin, "POST", "distmgr", {"hold": True, "time_per_package_s": 0.5})
    assert (status, body["held"], body["time_per_package_s"]) == (200, True, 0.5)
    refresh_all_direct(provider, 2)
    assert call(admin, "GET", "distmgr")[1]["queued"] == 2
    status, body = call(admin, "POST", "distmgr", {"drain": True, "hold": False})
    assert (status, body["held"], body["queued"], body["processed"]) == (200, False, 0, 2)


@pytest.mark.parametrize(
    "body",
    [{"hold": "yes"}, {"drain": 1}, {"time_per_package_s": -1}, {"time_per_package_s": True}, {"threads": 4}],
)
def test_distmgr_post_refuses_bad_fields_and_changes_nothing(admin: AdminApi, body: dict[str, Any]) -> None:
    """A bad field is a 400 naming the problem; the DistMgr state is left as it was."""
    before = call(admin, "GET", "distmgr")[1]
    status, answer = call(admin, "POST", "distmgr", body)
    assert status == 400 and answer["error"]
    assert call(admin, "GET", "distmgr")[1] == before


def test_calls_totals_reports_invoked_and_accepted_without_the_per_package_log(
    admin: AdminApi, provider: Provider
) -> None:
    """GET /admin/calls/totals: totals only (cheap), with invokes and accepted."""
    refresh_all_direct(provider, 3)
    status, body = call(admin, "GET", "calls/totals")
    assert status == 200 and set(body) == {"totals"}
    assert (body["totals"]["invokes"], body["totals"]["accepted"]) == (3, 3)


def test_concurrency_routes_read_and_reset_the_high_water_mark(admin: AdminApi) -> None:
    """GET /admin/concurrency answers the meter's snapshot; POST .../reset answers the reset one."""
    status, body = call(admin, "GET", "concurrency")
    assert (status, body["total"], body["per_user"]) == (200, {"current": 0, "peak": 0}, {})
    status, body = call(admin, "POST", "concurrency/reset")
    assert (status, body["operations"]) == (200, 0)
    assert call(admin, "GET", "concurrency/reset")[0] == 405
