"""Injected operational faults, latency, idle close and the per-user quota, seen through pywinrm."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol

from emulator.server import Emulator
from testing.fixtures_emulator import EMULATOR_USERNAME, EmulatorFactory, winrm_protocol
from testing.waiting import wait_until
from testing.wsman_requests import get_envelope, invoke_envelope, relates_to, return_value

pytestmark = pytest.mark.integration

_QUOTA_MAX_OPERATIONS = 2150859174
_WMI_GENERIC_FAILURE = 2147749889
_BASIC_HTTP: dict[str, Any] = {"auth_modes": ("basic",), "allow_unencrypted": True}
_NTLM_HTTP: dict[str, Any] = {"auth_modes": ("ntlm",)}


def _refresh_envelope(emulator: Emulator) -> str:
    package = next(
        p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] != "SMS_TaskSequencePackage"
    )
    return invoke_envelope(emulator.url, emulator.settings.site_code, package["PackageID"], class_name=package["class"])


def _refresh(protocol: Protocol, emulator: Emulator) -> int:
    return return_value(protocol.send_message(_refresh_envelope(emulator)))


@pytest.mark.parametrize("listener", [_BASIC_HTTP, _NTLM_HTTP], ids=["basic", "ntlm"])
def test_injected_503_is_a_transport_error_and_the_session_survives(
    listener: dict[str, Any], emulator_factory: EmulatorFactory
) -> None:
    """http_503 answers HTTP 503 (WinRMTransportError 503); the next call on the same Protocol works."""
    emulator = emulator_factory(**listener)
    protocol = winrm_protocol(emulator)
    emulator.faults.inject_next("http_503")
    with pytest.raises(WinRMTransportError) as raised:
        _refresh(protocol, emulator)
    assert raised.value.code == 503
    assert "Service Unavailable" in raised.value.response_text
    assert _refresh(protocol, emulator) == 0


def test_auth_handshakes_and_priming_post_do_not_consume_injected_faults(
    emulator_factory: EmulatorFactory,
) -> None:
    """With NTLM the priming POST and handshake pass; the queued fault hits the first real operation."""
    emulator = emulator_factory(**_NTLM_HTTP)
    emulator.faults.inject_next("generic_failure")
    protocol = winrm_protocol(emulator)
    with pytest.raises(WSManFaultError):
        _refresh(protocol, emulator)
    assert _refresh(protocol, emulator) == 0
    assert emulator.faults.snapshot()["decisions"] == 2
    assert emulator.stats.count("empty_posts") == 1


def test_injected_reset_is_a_connection_error(emulator_factory: EmulatorFactory) -> None:
    """connection_reset aborts the TCP connection (requests ConnectionError); Basic reconnects by itself."""
    emulator = emulator_factory(**_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    emulator.faults.inject_next("connection_reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        _refresh(protocol, emulator)
    assert _refresh(protocol, emulator) == 0
    assert emulator.stats.count("connection_resets") == 1


def test_reset_ntlm_session_needs_close_session(emulator_factory: EmulatorFactory) -> None:
    """After a reset the NTLM context is gone: 400 until transport.close_session(), then it works."""
    emulator = emulator_factory(**_NTLM_HTTP)
    protocol = winrm_protocol(emulator)
    assert _refresh(protocol, emulator) == 0
    emulator.faults.inject_next("connection_reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        _refresh(protocol, emulator)
    with pytest.raises(WinRMTransportError) as raised:
        _refresh(protocol, emulator)
    assert raised.value.code == 400
    protocol.transport.close_session()
    assert _refresh(protocol, emulator) == 0


def test_injected_timeout_fault_raises_operation_timeout(emulator_factory: EmulatorFactory) -> None:
    """timeout_fault is a w:TimedOut fault: pywinrm raises WinRMOperationTimeoutError."""
    emulator = emulator_factory(**_NTLM_HTTP)
    emulator.faults.inject_next("timeout_fault")
    with pytest.raises(WinRMOperationTimeoutError):
        _refresh(winrm_protocol(emulator), emulator)


def test_injected_quota_and_generic_faults_raise_wsman_faults(emulator_factory: EmulatorFactory) -> None:
    """quota_fault and generic_failure are SOAP faults (WSManFaultError) with their WMI error codes."""
    emulator = emulator_factory(**_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    emulator.faults.inject_next("quota_fault")
    emulator.faults.inject_next("generic_failure")
    with pytest.raises(WSManFaultError) as quota:
        _refresh(protocol, emulator)
    with pytest.raises(WSManFaultError) as generic:
        _refresh(protocol, emulator)
    assert _QUOTA_MAX_OPERATIONS in (quota.value.wsman_fault_code, quota.value.wmierror_code)
    assert generic.value.wmierror_code == _WMI_GENERIC_FAILURE
    assert quota.value.code == generic.value.code == 500


def test_runtime_rates_apply_and_clear(emulator_factory: EmulatorFactory) -> None:
    """A rate of 1 fails every operation until the plan is cleared."""
    emulator = emulator_factory(**_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    emulator.faults.set_rates({"generic_failure": 1.0})
    for _ in range(3):
        with pytest.raises(WSManFaultError):
            _refresh(protocol, emulator)
    emulator.faults.clear()
    assert _refresh(protocol, emulator) == 0


def _outcomes(emulator: Emulator, count: int) -> list[str]:
    protocol = winrm_protocol(emulator)
    outcomes = []
    for _ in range(count):
        try:
            _refresh(protocol, emulator)
            outcomes.append("ok")
        except WSManFaultError:
            outcomes.append("fault")
    return outcomes


def test_seeded_random_faults_repeat(emulator_factory: EmulatorFactory) -> None:
    """Two emulators with one seed and rate fail the same operations of a sequential run."""
    first = emulator_factory(seed=123, **_BASIC_HTTP)
    second = emulator_factory(seed=123, **_BASIC_HTTP)
    for emulator in (first, second):
        emulator.faults.set_rates({"generic_failure": 0.5})
    outcomes = _outcomes(first, 16)
    assert outcomes == _outcomes(second, 16)
    assert {"ok", "fault"} == set(outcomes)


def test_injected_latency_is_observed_and_costs_no_cpu(emulator_factory: EmulatorFactory) -> None:
    """Added latency delays the reply by at least its length; the server's CPU per operation stays small."""
    emulator = emulator_factory(**_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    _refresh(protocol, emulator)
    emulator.faults.set_latency(0.3)
    started = time.perf_counter()
    assert _refresh(protocol, emulator) == 0
    assert time.perf_counter() - started >= 0.3
    assert emulator.stats.snapshot()["cpu_ms_per_operation"]["max"] < 300


def test_idle_closed_ntlm_session_fails_until_reset(emulator_factory: EmulatorFactory) -> None:
    """After an idle close, NTLM calls on the old Protocol get 400; a fresh session works."""
    emulator = emulator_factory(idle_timeout_s=0.5, **_NTLM_HTTP)
    protocol = winrm_protocol(emulator)
    assert _refresh(protocol, emulator) == 0
    assert emulator.stats.wait_for("idle_closes", 1, timeout_s=5.0)
    with pytest.raises(WinRMTransportError) as raised:
        _refresh(protocol, emulator)
    assert raised.value.code == 400
    protocol.transport.close_session()
    assert _refresh(protocol, emulator) == 0


def test_idle_closed_basic_connection_reconnects_transparently(emulator_factory: EmulatorFactory) -> None:
    """Basic authenticates every request, so an idle close only costs a new connection."""
    emulator = emulator_factory(idle_timeout_s=0.5, **_BASIC_HTTP)
    protocol = winrm_protocol(emulator)
    assert _refresh(protocol, emulator) == 0
    assert emulator.stats.wait_for("idle_closes", 1, timeout_s=5.0)
    assert _refresh(protocol, emulator) == 0
    assert emulator.stats.count("connections_opened") == 2


def test_concurrent_operations_over_the_quota_get_the_quota_fault(emulator_factory: EmulatorFactory) -> None:
    """With two operations held in flight and a quota of 2, a third one from the user is refused."""
    emulator = emulator_factory(max_concurrent_operations_per_user=2, **_BASIC_HTTP)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with emulator.hold_operations():
            held = [pool.submit(_refresh, winrm_protocol(emulator), emulator) for _ in range(2)]
            assert emulator.wait_in_flight(EMULATOR_USERNAME, 2, timeout_s=5.0)
            with pytest.raises(WSManFaultError) as raised:
                _refresh(winrm_protocol(emulator), emulator)
        assert [future.result(timeout=10) for future in held] == [0, 0]
    assert _QUOTA_MAX_OPERATIONS in (raised.value.wsman_fault_code, raised.value.wmierror_code)
    assert emulator.stats.count("quota_rejections") == 1
    assert emulator.wait_drained(EMULATOR_USERNAME, timeout_s=5.0)
    assert emulator.in_flight(EMULATOR_USERNAME) == 0


def test_a_quota_rejection_does_not_consume_an_injected_fault(emulator_factory: EmulatorFactory) -> None:
    """A queued fault waits for an admitted operation: the over-quota call gets the quota fault only."""
    emulator = emulator_factory(max_concurrent_operations_per_user=1, **_BASIC_HTTP)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with emulator.hold_operations():
            held = pool.submit(_refresh, winrm_protocol(emulator), emulator)
            # Admitted and decided (before the gate): the fault queued next is not for it.
            assert emulator.stats.wait_for("operations_admitted", 1, timeout_s=5.0)
            emulator.faults.inject_next("timeout_fault")
            with pytest.raises(WSManFaultError) as rejected:
                _refresh(winrm_protocol(emulator), emulator)
        assert held.result(timeout=10) == 0
    assert rejected.value.wmierror_code == _QUOTA_MAX_OPERATIONS
    assert emulator.faults.snapshot()["next"] == ["timeout_fault"]
    with pytest.raises(WinRMOperationTimeoutError):
        _refresh(winrm_protocol(emulator), emulator)


def test_the_quota_fault_has_no_relates_to_like_windows(emulator_factory: EmulatorFactory) -> None:
    """Both captured quota faults omit RelatesTo; over the quota our fault does too."""
    emulator = emulator_factory(max_concurrent_operations_per_user=1, **_BASIC_HTTP)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with emulator.hold_operations():
            held = pool.submit(_refresh, winrm_protocol(emulator), emulator)
            assert emulator.wait_in_flight(EMULATOR_USERNAME, 1, timeout_s=5.0)
            with pytest.raises(WSManFaultError) as rejected:
                _refresh(winrm_protocol(emulator), emulator)
        held.result(timeout=10)
    assert rejected.value.response is not None
    assert relates_to(rejected.value.response.encode()) is None


def test_latency_past_the_operation_timeout_answers_timed_out_at_the_timeout(
    emulator_factory: EmulatorFactory,
) -> None:
    """A delay longer than the request's OperationTimeout waits only that long, then w:TimedOut."""
    emulator = emulator_factory(**_BASIC_HTTP)
    emulator.faults.set_latency(30.0)
    package = emulator.provider.packages()[0]
    envelope = get_envelope(
        emulator.url, "PS1", package["PackageID"], class_name=package["class"], operation_timeout_s=0.2
    )
    started = time.perf_counter()
    with pytest.raises(WinRMOperationTimeoutError):
        winrm_protocol(emulator).send_message(envelope)
    elapsed_s = time.perf_counter() - started
    assert 0.2 <= elapsed_s < 5.0
    assert emulator.stats.count("operation_timeouts") == 1


@pytest.mark.parametrize("waiting_on", ["held_gate", "latency"])
def test_stop_with_operations_in_flight_is_prompt_and_joins_every_thread(
    waiting_on: str, emulator_factory: EmulatorFactory
) -> None:
    """Operations held at the gate or waiting out latency are woken by stop(); no server thread survives."""
    before = set(threading.enumerate())
    emulator = emulator_factory(**_BASIC_HTTP)
    package = emulator.provider.packages()[0]
    envelope = get_envelope(emulator.url, "PS1", package["PackageID"], class_name=package["class"])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            winrm_protocol(emulator, read_timeout_s=30).send_message(envelope)
        except Exception as exc:  # the connection is closed under it: any client error is expected
            errors.append(exc)

    clients = [threading.Thread(target=call) for _ in range(3)]
    if waiting_on == "latency":
        emulator.faults.set_latency(15.0)  # below the envelope's 20 s OperationTimeout: a plain wait
    with emulator.hold_operations() if waiting_on == "held_gate" else contextlib.nullcontext():
        for client in clients:
            client.start()
        assert emulator.wait_in_flight(EMULATOR_USERNAME, len(clients), timeout_s=5.0)
        started = time.perf_counter()
        emulator.stop()
        stop_s = time.perf_counter() - started
    for client in clients:
        client.join(10)

    def leftover() -> list[threading.Thread]:
        return [t for t in set(threading.enumerate()) - before if t not in clients and t.is_alive()]

    assert stop_s < 2.0
    # A connection accepted as stop() began has no registered thread to join yet: it sees the
    # server closing and ends on its own, at once on an idle machine, a moment later on a busy one.
    assert wait_until(lambda: leftover() == [], timeout_s=2.0), leftover()
    assert len(errors) == len(clients)
