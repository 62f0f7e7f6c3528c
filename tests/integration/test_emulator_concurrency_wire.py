"""The concurrency high-water mark (GET /admin/concurrency) under concurrent pywinrm clients."""

from __future__ import annotations

import functools
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from winrm.exceptions import WSManFaultError

from emulator.server import Emulator
from testing.fixtures_emulator import EMULATOR_USERNAME, EmulatorFactory, winrm_protocol
from testing.wsman_requests import enumerate_envelope, get_envelope, invoke_envelope
from worker.wsman import build_pull, enumeration_uri

pytestmark = pytest.mark.integration

_READER = "LAB\\reader"  # authenticates, but gets WMI access denied
_BASIC_HTTP: dict[str, Any] = {"auth_modes": ("basic",), "allow_unencrypted": True, "denied_users": (_READER,)}
_ENUMERATION_CONTEXT = "{http://schemas.xmlsoap.org/ws/2004/09/enumeration}EnumerationContext"
_WAIT_S = 5.0


@pytest.fixture
def admin(emulator_admin_session: requests.Session) -> requests.Session:
    """The emulator's admin API session (HTTP Basic with its credentials)."""
    return emulator_admin_session


def _concurrency(session: requests.Session, emulator: Emulator, method: str = "GET", route: str = "") -> Any:
    response = session.request(method, emulator.admin_url + "concurrency" + route, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _operations(emulator: Emulator) -> list[Callable[[], bytes]]:
    """A Get, an Invoke, an Enumerate and a Pull of the configured user, each on its own connection."""
    site = emulator.settings.site_code
    package = next(p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] == "SMS_Package")
    first_page = winrm_protocol(emulator).send_message(
        enumerate_envelope(emulator.url, site, "SELECT PackageID FROM SMS_Package", max_elements=1)
    )
    context = ET.fromstring(first_page).findtext(f".//{_ENUMERATION_CONTEXT}")
    assert context
    pull = build_pull(
        to_url=emulator.url, resource_uri=enumeration_uri(site), context=context, max_elements=1, operation_timeout_s=5
    )
    envelopes = [
        get_envelope(emulator.url, site, package["PackageID"]),
        invoke_envelope(emulator.url, site, package["PackageID"]),
        enumerate_envelope(emulator.url, site, "SELECT * FROM SMS_Package", max_elements=2),
        pull.text,
    ]
    return [functools.partial(_send, emulator, envelope) for envelope in envelopes]


def _send(emulator: Emulator, envelope: str) -> bytes:
    """One request on a new connection (so held operations do not queue behind each other)."""
    return winrm_protocol(emulator).send_message(envelope)


def _first_package_get(emulator: Emulator) -> str:
    package = emulator.provider.packages()[0]
    return get_envelope(emulator.url, emulator.settings.site_code, package["PackageID"], class_name=package["class"])


def _denied_get(emulator: Emulator) -> None:
    envelope = _first_package_get(emulator)
    with pytest.raises(WSManFaultError):
        winrm_protocol(emulator, username=_READER).send_message(envelope)


def test_the_high_water_mark_counts_every_operation_in_flight_per_user_and_in_total(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """Get, Invoke, Enumerate and Pull of one user plus a Get of another, all held in flight at once:
    peaks 4 and 1 per user, 5 in total, nothing current once they are answered."""
    emulator = emulator_factory(**_BASIC_HTTP)
    operations = _operations(emulator)
    # Forget the Enumerate that opened the Pull's context, once the server has left it.
    assert emulator.wait_drained(EMULATOR_USERNAME, timeout_s=_WAIT_S)
    _concurrency(admin, emulator, "POST", "/reset")
    with ThreadPoolExecutor(max_workers=5) as pool:
        with emulator.hold_operations():
            held = [pool.submit(operation) for operation in operations]
            denied = pool.submit(_denied_get, emulator)
            assert emulator.wait_in_flight(EMULATOR_USERNAME, 4, timeout_s=_WAIT_S)
            assert emulator.wait_in_flight(_READER, 1, timeout_s=_WAIT_S)
        assert all(future.result(timeout=10) for future in held)
        denied.result(timeout=10)
    assert emulator.wait_drained(EMULATOR_USERNAME, timeout_s=_WAIT_S)
    assert emulator.wait_drained(_READER, timeout_s=_WAIT_S)
    snapshot = _concurrency(admin, emulator)
    assert snapshot["total"]["peak"] == 5
    assert snapshot["per_user"] == {
        EMULATOR_USERNAME.casefold(): {"current": 0, "peak": 4},
        _READER.casefold(): {"current": 0, "peak": 1},
    }
    assert snapshot["operations"] == 5
    assert emulator.concurrency.peak(EMULATOR_USERNAME) == 4


def _gets_behind_a_shared_cap(emulator: Emulator, *, cap: int, threads: int, calls_each: int) -> None:
    """`threads` clients, each making `calls_each` Gets, never more than `cap` of them at once."""
    envelope = _first_package_get(emulator)
    slots = threading.Semaphore(cap)

    def capped_gets() -> None:
        protocol = winrm_protocol(emulator)
        for _ in range(calls_each):
            with slots:
                protocol.send_message(envelope)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(capped_gets) for _ in range(threads)]:
            future.result(timeout=60)
    assert emulator.wait_drained(EMULATOR_USERNAME, timeout_s=_WAIT_S)


def test_clients_sharing_a_cap_never_exceed_it_at_the_server(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """Six client threads behind a cap of two, with latency so calls overlap: the server saw at most two."""
    emulator = emulator_factory(latency_s=0.1, **_BASIC_HTTP)
    _gets_behind_a_shared_cap(emulator, cap=2, threads=6, calls_each=2)
    snapshot = _concurrency(admin, emulator)
    assert 1 <= snapshot["total"]["peak"] <= 2
    assert snapshot["operations"] == 12


def test_a_reply_in_hand_is_no_longer_counted_even_when_the_next_call_follows_at_once(
    emulator_factory: EmulatorFactory, admin: requests.Session
) -> None:
    """Back-to-back calls behind a cap of two (no latency, many hand-offs): the server never sees three.

    The count ends before the reply is written; were it to end after, a thread that had just
    released the cap could still be counted when the next caller's request is read.
    """
    emulator = emulator_factory(**_BASIC_HTTP)
    _gets_behind_a_shared_cap(emulator, cap=2, threads=6, calls_each=40)
    snapshot = _concurrency(admin, emulator)
    assert 1 <= snapshot["total"]["peak"] <= 2
    assert snapshot["operations"] == 240


def test_reset_starts_the_marks_afresh(emulator_factory: EmulatorFactory, admin: requests.Session) -> None:
    """After POST /admin/concurrency/reset the peaks are what is in flight (none); one call makes them 1."""
    emulator = emulator_factory(**_BASIC_HTTP)
    operations = _operations(emulator)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with emulator.hold_operations():
            held = [pool.submit(operation) for operation in operations[:2]]
            assert emulator.wait_in_flight(EMULATOR_USERNAME, 2, timeout_s=_WAIT_S)
        for future in held:
            future.result(timeout=10)
    assert emulator.wait_drained(EMULATOR_USERNAME, timeout_s=_WAIT_S)
    assert _concurrency(admin, emulator)["total"]["peak"] == 2
    reset = _concurrency(admin, emulator, "POST", "/reset")
    assert (reset["total"], reset["operations"]) == ({"current": 0, "peak": 0}, 0)
    operations[0]()
    assert emulator.wait_drained(EMULATOR_USERNAME, timeout_s=_WAIT_S)
    after = _concurrency(admin, emulator)
    assert (after["total"]["peak"], after["operations"]) == (1, 1)
