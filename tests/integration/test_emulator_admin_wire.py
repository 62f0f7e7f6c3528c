"""The emulator's /admin/ JSON API over real sockets: auth, observation, control."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from emulator.server import Emulator
from testing.fixtures_emulator import EMULATOR_USERNAME, EmulatorFactory, winrm_protocol
from testing.wsman_requests import invoke_envelope, return_value

pytestmark = pytest.mark.integration

_RETURN_MEDIUM_NOT_READY = 21


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> Emulator:
    """A private Basic/HTTP emulator whose STORAGE_COMPRESS media all start not ready."""
    return emulator_factory(
        auth_modes=("basic",), allow_unencrypted=True, compress_share=0.5, medium_not_ready_share=1.0
    )


@pytest.fixture
def admin(emulator_admin_session: requests.Session) -> requests.Session:
    """The emulator's admin API session (HTTP Basic with its credentials)."""
    return emulator_admin_session


def _call(session: requests.Session, emulator: Emulator, method: str, route: str, **kwargs: Any) -> Any:
    response = session.request(method, emulator.admin_url + route, timeout=5, **kwargs)
    assert response.headers["Content-Type"] == "application/json"
    return response


def _not_ready_package(emulator: Emulator) -> dict[str, Any]:
    return next(
        p
        for p in emulator.provider.packages()
        if p["medium_ready"] is False and p["class"] != "SMS_TaskSequencePackage"
    )


def _refresh(emulator: Emulator, package: dict[str, Any]) -> int:
    envelope = invoke_envelope(
        emulator.url, emulator.settings.site_code, package["PackageID"], class_name=package["class"]
    )
    return return_value(winrm_protocol(emulator).send_message(envelope))


@pytest.mark.parametrize("auth", [None, (EMULATOR_USERNAME, "wrong-password")])
def test_admin_requires_the_emulator_credentials(emulator: Emulator, auth: tuple[str, str] | None) -> None:
    """Without credentials, or with wrong ones, every admin route answers 401."""
    with requests.Session() as session:
        session.trust_env = False
        session.auth = auth
        for method, route in [("GET", "health"), ("POST", "medium"), ("DELETE", "faults"), ("GET", "nope")]:
            response = _call(session, emulator, method, route, json={"ready": True})
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_health_and_packages(emulator: Emulator, admin: requests.Session) -> None:
    """health describes the listener; packages lists the catalogue; one package has its properties."""
    health = _call(admin, emulator, "GET", "health").json()
    assert health["status"] == "ok"
    assert health["endpoint"] == emulator.url
    packages = _call(admin, emulator, "GET", "packages").json()["packages"]
    assert len(packages) == emulator.settings.package_count
    package_id = packages[0]["PackageID"]
    package = _call(admin, emulator, "GET", f"packages/{package_id}").json()
    assert package["PackageID"] == package_id
    assert _call(admin, emulator, "GET", "packages/PS1FFFFF").status_code == 404


def test_medium_flip_changes_the_refresh_outcome(emulator: Emulator, admin: requests.Session) -> None:
    """A not-ready medium fails the refresh (ReturnValue 21) until POST /admin/medium makes it ready."""
    package = _not_ready_package(emulator)
    assert _refresh(emulator, package) == _RETURN_MEDIUM_NOT_READY
    response = _call(admin, emulator, "POST", "medium", json={"package_id": package["PackageID"], "ready": True})
    assert response.status_code == 200
    assert response.json()["changed"] == [package["PackageID"]]
    assert _refresh(emulator, package) == 0


def test_medium_for_every_package_and_unknown_package(emulator: Emulator, admin: requests.Session) -> None:
    """Without package_id every compressed medium changes; an unknown id is 404."""
    changed = _call(admin, emulator, "POST", "medium", json={"ready": True}).json()["changed"]
    assert changed and all(p["medium_ready"] is not False for p in emulator.provider.packages())
    assert _call(admin, emulator, "POST", "medium", json={"package_id": "PS1FFFFF"}).status_code == 404


def test_calls_log_and_reset(emulator: Emulator, admin: requests.Session) -> None:
    """The call log counts a refresh; POST /admin/calls/reset empties it."""
    package = _not_ready_package(emulator)
    _refresh(emulator, package)
    calls = _call(admin, emulator, "GET", "calls").json()
    assert calls["totals"]["invokes"] == 1
    assert calls["packages"][package["PackageID"]]["invokes"] == 1
    assert _call(admin, emulator, "POST", "calls/reset").status_code == 200
    assert _call(admin, emulator, "GET", "calls").json()["totals"]["invokes"] == 0


def test_faults_set_read_and_clear(emulator: Emulator, admin: requests.Session) -> None:
    """POST /admin/faults sets rates, latency and a queue the next operation obeys; DELETE clears."""
    body = {"rates": {"http_503": 0.25}, "latency_ms": 5, "next": [{"kind": "timeout_fault", "count": 2}]}
    posted = _call(admin, emulator, "POST", "faults", json=body).json()
    assert posted["rates"]["http_503"] == 0.25
    assert posted["latency_ms"] == 5
    assert posted["next"] == ["timeout_fault", "timeout_fault"]
    assert _call(admin, emulator, "GET", "faults").json() == posted
    cleared = _call(admin, emulator, "DELETE", "faults").json()
    assert cleared["next"] == [] and cleared["rates"]["http_503"] == 0.0 and cleared["latency_ms"] == 0.0


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"rates": {"disk_full": 0.1}}',
        b'{"rates": {"http_503": 3}}',
        b'{"next": [{"kind": "http_503", "count": "two"}]}',
        b'{"latency_ms": "slow"}',
        b'{"latency_ms": 60001}',
        b'{"latency_ms": 1e300}',
        b'{"next": [{"kind": "http_503", "count": 10001}]}',
        b'{"next": [{"kind": "http_503", "count": 6000}, {"kind": "timeout_fault", "count": 6000}]}',
        b'{"surprise": 1}',
    ],
)
def test_bad_fault_requests_are_400_and_change_nothing(
    emulator: Emulator, admin: requests.Session, body: bytes
) -> None:
    """Invalid JSON or values answer 400 with a JSON error and leave the plan as it was."""
    before = emulator.faults.snapshot()
    response = _call(admin, emulator, "POST", "faults", data=body)
    assert response.status_code == 400
    assert "error" in response.json()
    assert emulator.faults.snapshot() == before


def test_the_fault_queue_cap_counts_what_is_already_queued(emulator: Emulator, admin: requests.Session) -> None:
    """With 9999 faults queued, one more is accepted and two more are a 400 that queues nothing."""
    assert _call(admin, emulator, "POST", "faults", json={"next": [{"kind": "http_503", "count": 9_999}]}).ok
    refused = _call(admin, emulator, "POST", "faults", json={"next": [{"kind": "http_503", "count": 2}]})
    assert refused.status_code == 400
    assert "10000" in refused.json()["error"]
    assert len(emulator.faults.snapshot()["next"]) == 9_999
    assert _call(admin, emulator, "POST", "faults", json={"next": [{"kind": "http_503"}]}).ok


def test_stats_report_operations_and_cpu(emulator: Emulator, admin: requests.Session) -> None:
    """stats counts WS-Man operations with CPU ms per operation; stats/reset zeroes them."""
    package = _not_ready_package(emulator)
    for _ in range(3):
        _refresh(emulator, package)
    assert emulator.stats.wait_for_operations(3, timeout_s=5.0)  # recorded just after each reply
    stats = _call(admin, emulator, "GET", "stats").json()
    assert stats["operations"] == 3
    assert stats["cpu_ms_per_operation"]["samples"] == 3
    assert 0 < stats["cpu_ms_per_operation"]["p50"] <= stats["cpu_ms_per_operation"]["p95"]
    assert stats["operations_per_s"] > 0
    assert _call(admin, emulator, "POST", "stats/reset").status_code == 200
    assert _call(admin, emulator, "GET", "stats").json()["operations"] == 0


def test_unknown_admin_route_is_404_and_wrong_method_405(emulator: Emulator, admin: requests.Session) -> None:
    """Unknown admin paths are 404; known ones with the wrong method are 405 with Allow."""
    assert _call(admin, emulator, "GET", "nothing-here").status_code == 404
    response = _call(admin, emulator, "DELETE", "health")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
