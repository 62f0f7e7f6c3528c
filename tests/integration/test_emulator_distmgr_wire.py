"""Distribution Manager's queue through pywinrm (Invoke, then Get) and the admin API, over HTTP."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests
from winrm.protocol import Protocol

from emulator.server import Emulator
from testing.fixtures_emulator import EmulatorFactory, winrm_protocol
from testing.waiting import wait_until
from testing.wsman_requests import get_envelope, invoke_envelope, return_value

pytestmark = pytest.mark.integration

_BASIC_HTTP: dict[str, Any] = {"auth_modes": ("basic",), "allow_unencrypted": True, "package_count": 40}
_PROCESSED_WITHIN_S = 10.0


@pytest.fixture
def admin(emulator_admin_session: requests.Session) -> requests.Session:
    """The emulator's admin API session (HTTP Basic with its credentials)."""
    return emulator_admin_session


def _admin(session: requests.Session, emulator: Emulator, method: str, route: str, body: Any = None) -> Any:
    response = session.request(method, emulator.admin_url + route, json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _direct_packages(emulator: Emulator, count: int) -> list[dict[str, Any]]:
    """STORAGE_DIRECT packages (every refresh is accepted), not task sequences."""
    packages = [
        p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] != "SMS_TaskSequencePackage"
    ]
    assert len(packages) >= count
    return packages[:count]


def _refresh(protocol: Protocol, emulator: Emulator, package: dict[str, Any]) -> int:
    site = emulator.settings.site_code
    envelope = invoke_envelope(emulator.url, site, package["PackageID"], class_name=package["class"])
    return return_value(protocol.send_message(envelope))


def _get(protocol: Protocol, emulator: Emulator, package: dict[str, Any]) -> dict[str, str]:
    """The package's properties as the Get reply carries them (local name -> text, datetimes included)."""
    site = emulator.settings.site_code
    reply = protocol.send_message(get_envelope(emulator.url, site, package["PackageID"], class_name=package["class"]))
    body = ET.fromstring(reply).find("{http://www.w3.org/2003/05/soap-envelope}Body")
    assert body is not None and len(body) == 1
    return {child.tag.rsplit("}", 1)[-1]: "".join(child.itertext()) for child in body[0]}


def test_an_accepted_refresh_is_in_progress_until_distmgr_processed_it(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """Invoke returns 0; Get shows ActionInProgress 1, the old SourceVersion and a new LastRefreshTime;
    once DistMgr is drained, ActionInProgress 0 and SourceVersion + 1."""
    emulator = emulator_factory(distmgr_time_per_package_s=600.0, **_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    (package,) = _direct_packages(emulator, 1)
    before = _get(protocol, emulator, package)
    assert before["ActionInProgress"] == "0"
    assert _refresh(protocol, emulator, package) == 0
    pending = _get(protocol, emulator, package)
    assert (pending["ActionInProgress"], pending["SourceVersion"]) == ("1", before["SourceVersion"])
    assert pending["LastRefreshTime"] > before["LastRefreshTime"]
    assert _admin(admin, emulator, "GET", "distmgr")["processing_ids"] == [package["PackageID"]]
    assert _admin(admin, emulator, "POST", "distmgr", {"drain": True})["processed"] == 1
    done = _get(protocol, emulator, package)
    assert (done["ActionInProgress"], int(done["SourceVersion"])) == ("0", int(before["SourceVersion"]) + 1)
    assert done["SourceDate"] >= pending["LastRefreshTime"]


def test_distmgr_finishes_on_its_own_after_the_time_per_package(emulator_factory: EmulatorFactory) -> None:
    """With a short time per package, a client polling Get sees the new SourceVersion (bounded wait)."""
    emulator = emulator_factory(distmgr_time_per_package_s=0.2, distmgr_threads=1, **_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    packages = _direct_packages(emulator, 2)
    versions = [int(_get(protocol, emulator, package)["SourceVersion"]) for package in packages]
    assert [_refresh(protocol, emulator, package) for package in packages] == [0, 0]
    assert _get(protocol, emulator, packages[1])["ActionInProgress"] == "1"

    def both_processed() -> bool:
        return all(_get(protocol, emulator, package)["ActionInProgress"] == "0" for package in packages)

    assert wait_until(both_processed, timeout_s=_PROCESSED_WITHIN_S)
    assert [int(_get(protocol, emulator, package)["SourceVersion"]) for package in packages] == [
        version + 1 for version in versions
    ]


def test_distmgr_processes_no_more_packages_than_its_threads(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """Five refreshes with two DistMgr threads: two processing (the first two), three queued FIFO."""
    emulator = emulator_factory(distmgr_threads=2, distmgr_time_per_package_s=600.0, **_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    packages = _direct_packages(emulator, 5)
    assert [_refresh(protocol, emulator, package) for package in packages] == [0] * 5
    state = _admin(admin, emulator, "GET", "distmgr")
    expected = {"threads": 2, "time_per_package_s": 600.0, "processing": 2, "queued": 3, "accepted": 5}
    assert {key: state[key] for key in expected} == expected
    assert state["processing_ids"] == sorted(p["PackageID"] for p in packages[:2])
    assert [_get(protocol, emulator, package)["ActionInProgress"] for package in packages] == ["1"] * 5
    totals = _admin(admin, emulator, "GET", "calls/totals")["totals"]
    assert (totals["invokes"], totals["accepted"]) == (5, 5)


def test_a_held_distmgr_queues_refreshes_until_released(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """hold: accepted refreshes stay queued even with no time per package; release processes them."""
    emulator = emulator_factory(**_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    (package,) = _direct_packages(emulator, 1)
    assert _admin(admin, emulator, "POST", "distmgr", {"hold": True})["held"] is True
    assert _refresh(protocol, emulator, package) == 0
    assert _refresh(protocol, emulator, package) == 0  # coalesced into the queued one
    assert _get(protocol, emulator, package)["ActionInProgress"] == "1"
    released = _admin(admin, emulator, "POST", "distmgr", {"hold": False})
    assert (released["held"], released["queued"], released["processed"], released["coalesced"]) == (False, 0, 1, 1)
    assert _get(protocol, emulator, package)["ActionInProgress"] == "0"


def test_an_invoke_aimed_at_a_pending_package_is_lost_until_the_older_refresh_is_done(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """lose_invoke_while_pending: the second Invoke is not run; its connection drops once DistMgr processed the
    first refresh; the next Invoke is answered and runs."""
    emulator = emulator_factory(**_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    (package,) = _direct_packages(emulator, 1)
    _admin(admin, emulator, "POST", "distmgr", {"hold": True})
    assert _refresh(protocol, emulator, package) == 0
    armed = _admin(
        admin, emulator, "POST", "faults", {"lose_invoke_while_pending": [{"package_id": package["PackageID"]}]}
    )
    assert armed["lose_invoke_while_pending"] == {package["PackageID"]: 1}
    lost: list[BaseException] = []

    def second_invoke() -> None:
        try:
            _refresh(winrm_protocol(emulator), emulator, package)
        except requests.exceptions.ConnectionError as exc:
            lost.append(exc)

    caller = threading.Thread(target=second_invoke)
    caller.start()
    assert emulator.stats.wait_for("lost_invokes_while_pending", 1, timeout_s=10.0)
    assert caller.is_alive()  # held while the first refresh is pending
    _admin(admin, emulator, "POST", "distmgr", {"hold": False})
    caller.join(10.0)
    assert not caller.is_alive() and len(lost) == 1
    assert emulator.provider.call_log()["packages"][package["PackageID"]]["accepted"] == 1
    assert _refresh(protocol, emulator, package) == 0
    assert emulator.provider.call_log()["packages"][package["PackageID"]]["accepted"] == 2
