"""The pure operation policy (emulator.policy): what to answer after which wait."""

from __future__ import annotations

import pytest

from emulator.fault_injection import Decision, FaultKind
from emulator.listener.operation_plan import OperationPlan, plan_admitted, plan_over_quota


def _no_timeout() -> float | None:
    raise AssertionError("the OperationTimeout is read only when there is latency")


def test_over_quota_is_the_quota_fault_at_once() -> None:
    """A request over the per-user quota gets the WinRM quota fault without waiting."""
    assert plan_over_quota() == OperationPlan(0.0, "soap_fault", "quota_fault", "quota_rejections")


def test_no_latency_no_fault_is_the_providers_answer_without_reading_the_timeout() -> None:
    """Nothing drawn: answer from the provider at once; the envelope is not parsed for its timeout."""
    assert plan_admitted(Decision(0.0, None), _no_timeout) == OperationPlan(0.0, "provider")


def test_latency_within_the_operation_timeout_is_waited_out() -> None:
    """Latency shorter than the OperationTimeout: wait it, then answer normally."""
    assert plan_admitted(Decision(2.0, None), lambda: 5.0) == OperationPlan(2.0, "provider")


@pytest.mark.parametrize("kind", [None, "http_503", "generic_failure"])
def test_latency_beyond_the_operation_timeout_is_timed_out_once_the_timeout_passed(kind: FaultKind | None) -> None:
    """Latency longer than the OperationTimeout: w:TimedOut after the timeout, whatever was drawn."""
    plan = plan_admitted(Decision(9.0, kind), lambda: 5.0)
    assert plan == OperationPlan(5.0, "soap_fault", "timeout_fault", "operation_timeouts")


def test_latency_without_an_operation_timeout_is_waited_out() -> None:
    """A request with no (readable) OperationTimeout waits the whole latency."""
    assert plan_admitted(Decision(9.0, None), lambda: None) == OperationPlan(9.0, "provider")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("connection_reset", OperationPlan(1.0, "connection_reset")),
        ("http_503", OperationPlan(1.0, "http_503", counter="injected_http_503")),
        ("timeout_fault", OperationPlan(1.0, "soap_fault", "timeout_fault", "injected_timeout_fault")),
        ("quota_fault", OperationPlan(1.0, "soap_fault", "quota_fault", "injected_quota_fault")),
        ("generic_failure", OperationPlan(1.0, "soap_fault", "generic_failure", "injected_generic_failure")),
    ],
)
def test_an_injected_fault_follows_the_latency(kind: FaultKind, expected: OperationPlan) -> None:
    """Each injected kind maps to its answer after the drawn latency, with its counter."""
    assert plan_admitted(Decision(1.0, kind), lambda: 30.0) == expected
