"""What to do with one WS-Man operation once it is authenticated (pure: no sockets, no waiting).

Inputs: whether the per-user quota admitted it, the fault plan's draw (added latency, injected
fault kind) and the request's w:OperationTimeout. Output: how long to wait, then what to answer.

* Over the quota: the WinRM quota fault at once (no draw is consumed for it).
* Latency longer than the OperationTimeout: WinRM gives up on a provider slower than the
  request allows and answers w:TimedOut ([MS-WSMV] 3.1.4.1.2) once that much time has passed.
* Otherwise wait the latency, then the injected failure (reset the connection, HTTP 503, or a
  SOAP fault) or the provider's answer; a lost reply runs the operation, then resets the
  connection instead of answering (the work is done, the client never hears of it).

The server waits (waking early when it stops, in which case it answers nothing) and executes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from emulator.fault_injection import SOAP_FAULT_KINDS, Decision

__all__ = ["OperationPlan", "SoapFaultKind", "plan_admitted", "plan_over_quota"]

SoapFaultKind = Literal["timeout_fault", "quota_fault", "generic_failure"]
Answer = Literal["provider", "soap_fault", "http_503", "connection_reset", "lost_reply"]
# Injected kinds the provider answers with a SOAP fault, typed.
_SOAP_FAULTS: dict[str | None, SoapFaultKind] = {kind: kind for kind in get_args(SoapFaultKind)}
assert set(_SOAP_FAULTS) == SOAP_FAULT_KINDS, "SoapFaultKind must list fault_injection.SOAP_FAULT_KINDS"


@dataclass(frozen=True, slots=True)
class OperationPlan:
    """Wait `wait_s`, then answer; `counter` names the server statistic the answer bumps."""

    wait_s: float
    answer: Answer
    fault_kind: SoapFaultKind | None = None  # which SOAP fault, when answer == "soap_fault"
    counter: str | None = None


def plan_over_quota() -> OperationPlan:
    """The request is over the user's quota of concurrent operations."""
    return OperationPlan(0.0, "soap_fault", "quota_fault", "quota_rejections")


def plan_admitted(decision: Decision, operation_timeout_s: Callable[[], float | None]) -> OperationPlan:
    """The plan for an admitted operation; `operation_timeout_s` is read only when there is latency."""
    delay_s = decision.delay_s
    if delay_s > 0:
        timeout_s = operation_timeout_s()
        if timeout_s is not None and delay_s > timeout_s:
            return OperationPlan(timeout_s, "soap_fault", "timeout_fault", "operation_timeouts")
    kind = decision.kind
    if kind == "connection_reset":
        return OperationPlan(delay_s, "connection_reset")
    if kind == "lost_reply":
        return OperationPlan(delay_s, "lost_reply", counter="injected_lost_reply")
    if kind == "http_503":
        return OperationPlan(delay_s, "http_503", counter="injected_http_503")
    fault_kind = _SOAP_FAULTS.get(kind)
    if fault_kind is not None:
        return OperationPlan(delay_s, "soap_fault", fault_kind, f"injected_{kind}")
    return OperationPlan(delay_s, "provider")
