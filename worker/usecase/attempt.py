"""One attempt at refreshing one package, independent of Celery.

Read the package (Get), check the invoke fence, record it, call RefreshPkgSource (Invoke),
classify the ReturnValue, and optionally wait, bounded, for DistMgr to bump SourceVersion.
Failures are raised as typed `RefreshError`s; the caller decides about retries (`worker.usecase.decide`).

An Invoke whose reply never came back may still have landed, so it is never simply sent again:
a short in-call retry (the `in_call` policy, for errors that say the call did not run: refused
connections, a busy provider) first reads the package and compares it with the fence written
before the first Invoke (worker/stores/fence.py); an Invoke that timed out is not retried in the call at
all (the provider may still be running it) but left to the next delivery and its fence check.
The same check runs when a redelivered or re-queued message finds a fence left by an earlier try.

The provider's concurrency cap is the caller's (an `OperationGate`): the attempt runs under one
slot until the Invoke has answered; the slot is then given back, and each Get of the bounded wait
for DistMgr takes a slot of its own only for that Get, so a verifying request never holds a slot
through its sleeps.

The whole attempt ends by its `deadline` (worker/domain/deadline.py): every call gets only what is left
of it, the Invoke is not sent once it has passed (a `timeout`, re-queued like any other), an
in-call retry that would not fit is not made, and the verification stops with it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from config.settings import RetryPolicy
from errors import MediumNotReadyError, OperationTimeoutError, RefreshError, ReturnValueError
from worker.domain.deadline import Deadline
from worker.domain.packages import PackageInfo
from worker.domain.refresh_answer import error_for_medium_fault, refresh_outcome
from worker.retry import next_delay_s
from worker.usecase.values import FenceSnapshot, landed

__all__ = ["AttemptResult", "InvokeFence", "OperationGate", "RefreshClient", "UngatedOperations", "attempt_refresh"]

AttemptStatus = Literal["accepted", "source_updated"]
_T = TypeVar("_T")


class RefreshClient(Protocol):
    """What an attempt needs from the SMS Provider client (`worker.provider.client.SccmClient`)."""

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo: ...

    def refresh(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> int: ...


class InvokeFence(Protocol):
    """The fence of one request (worker.stores.fence.RedisInvokeFences bound to a request id)."""

    def read(self) -> FenceSnapshot | None: ...

    def write(self, snapshot: FenceSnapshot) -> None: ...


class OperationGate(Protocol):
    """The provider's concurrency cap as an attempt sees it (worker/usecase/delivery.py binds it to slots)."""

    def invoked(self) -> None:
        """The Invoke has answered: the slot the attempt ran under is no longer needed."""

    def run(self, operation: Callable[[], _T]) -> _T | None:
        """`operation` under a slot of its own, or None without running it when none is free now."""


class UngatedOperations:
    """No cap: every operation runs at once."""

    def invoked(self) -> None:
        return None

    def run(self, operation: Callable[[], _T]) -> _T | None:
        return operation()


@dataclass(frozen=True)
class AttemptResult:
    status: AttemptStatus
    return_value: int
    package: PackageInfo
    source_version_before: int | None
    source_version_after: int | None
    # True when an earlier, interrupted RefreshPkgSource of this request was found to have landed.
    confirmed_earlier_invoke: bool = False


def attempt_refresh(
    client: RefreshClient,
    package_class: str,
    package_id: str,
    *,
    verify_timeout_s: float = 0.0,
    verify_poll_s: float = 1.0,
    known_version_before: int | None = None,
    on_package: Callable[[PackageInfo], None] | None = None,
    known_package: PackageInfo | None = None,
    fence: InvokeFence | None = None,
    invoke_retry: RetryPolicy | None = None,
    gate: OperationGate | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    deadline: Deadline | None = None,
) -> AttemptResult:
    """Refresh once; raise MediumNotReadyError / ReturnValueError / transport errors on failure."""
    verify = _Verify(
        package_class, package_id, verify_timeout_s, verify_poll_s, sleep, clock, gate or UngatedOperations(), deadline
    )
    earlier = fence.read() if fence is not None else None
    if known_package is not None and earlier is None:
        # The producer read the package moments ago (a bulk enumeration): no Get before the
        # first invoke. Any later try reads it again, to check the fence.
        package = known_package
        if on_package is not None:
            on_package(package)
    else:
        package = _read(client, package_class, package_id, on_package, deadline)
    before = known_version_before if known_version_before is not None else package.source_version
    started = clock()
    tries = 0
    while True:
        if earlier is not None and landed(earlier, package):
            # Verify against the version before that Invoke: DistMgr may already have raised it
            # (a redelivered message knows no version of its own), and waiting for a second rise
            # would hold the thread for the whole verify timeout, to end merely `accepted`.
            since = (
                before if known_version_before is not None or earlier.source_version is None else earlier.source_version
            )
            return _accepted(client, package, since, verify, confirmed=True)
        if deadline is not None and deadline.expired():
            raise OperationTimeoutError("the attempt's time ran out before RefreshPkgSource could be sent")
        if fence is not None:
            earlier = FenceSnapshot.of(package, wall_clock())
            fence.write(earlier)
        tries += 1
        try:
            return_value = client.refresh(package_class, package_id, deadline=deadline)
            break
        except RefreshError as exc:
            # A WMI generic failure during RefreshPkgSource on a STORAGE_COMPRESS package is the
            # SDK's "medium not ready" shape; everything else keeps its own meaning.
            error = error_for_medium_fault(exc, package.pkg_source_flag)
            delay = _invoke_retry_delay(error, invoke_retry, tries, clock() - started)
            if delay is None or (deadline is not None and delay >= deadline.remaining_s()):
                raise error from None
        sleep(delay)
        # The reply was lost, not necessarily the request: look before invoking again.
        package = _read(client, package_class, package_id, on_package, deadline)

    verdict = refresh_outcome(return_value, package.pkg_source_flag)
    if verdict == "medium_not_ready":
        raise MediumNotReadyError(
            f"RefreshPkgSource returned {return_value}: source medium of STORAGE_COMPRESS package not ready",
            code=return_value,
            return_value=return_value,
        )
    if verdict != "accepted":
        flag = package.pkg_source_flag
        hint = " (STORAGE_NO_SOURCE: nothing to refresh)" if flag == 1 else ""
        raise ReturnValueError(
            f"RefreshPkgSource returned {return_value}{hint}", code=return_value, return_value=return_value
        )
    return _accepted(client, package, before, verify, confirmed=False)


@dataclass(frozen=True)
class _Verify:
    """How to wait for DistMgr after an accepted refresh (timeout 0: do not wait)."""

    package_class: str
    package_id: str
    timeout_s: float
    poll_s: float
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    gate: OperationGate
    deadline: Deadline | None  # the attempt's: the wait ends by it too

    def until(self) -> Deadline:
        """When the wait, started now, ends: after `timeout_s`, or at the attempt's deadline if sooner."""
        if self.deadline is None:
            return Deadline.after(self.timeout_s, clock=self.clock)
        return self.deadline.within(self.timeout_s)


def _read(
    client: RefreshClient,
    package_class: str,
    package_id: str,
    on_package: Callable[[PackageInfo], None] | None,
    deadline: Deadline | None,
) -> PackageInfo:
    package = client.get_package(package_class, package_id, deadline=deadline)
    if on_package is not None:
        on_package(package)
    return package


def _invoke_retry_delay(error: RefreshError, policy: RetryPolicy | None, tries: int, elapsed_s: float) -> float | None:
    """The wait before the next in-call try of an Invoke, or None to give the error to the caller.

    An Invoke that timed out is never sent again in the call: the provider may still be working on
    it (SMS_BootImagePackage.RefreshPkgSource rebuilds the image and can outlast the operation
    timeout), and an immediate Get cannot tell. It is the fence's case: the request is re-queued,
    and the next delivery reads the package against the fence after the countdown.
    """
    if policy is None or not error.retryable or isinstance(error, MediumNotReadyError | OperationTimeoutError):
        return None
    return next_delay_s(policy, tries, elapsed_s)


def _accepted(
    client: RefreshClient, package: PackageInfo, before: int | None, verify: _Verify, *, confirmed: bool
) -> AttemptResult:
    verify.gate.invoked()
    if verify.timeout_s <= 0 or before is None:
        return AttemptResult("accepted", 0, package, before, None, confirmed)
    after = _wait_for_new_version(client, verify, before=before)
    status: AttemptStatus = "source_updated" if after is not None and after > before else "accepted"
    return AttemptResult(status, 0, package, before, after, confirmed)


def _wait_for_new_version(client: RefreshClient, verify: _Verify, *, before: int) -> int | None:
    """Poll Get until SourceVersion > before or the wait is over; the last version seen (None if none).

    A poll that finds no free slot is skipped: the next one comes `poll_s` later. Each Get has only
    what is left of the wait: a provider that stops answering cannot stretch it.
    """
    until = verify.until()
    last: int | None = None
    while True:
        # Verification is best effort: the refresh was already accepted.
        with contextlib.suppress(RefreshError):
            package = verify.gate.run(
                lambda: client.get_package(verify.package_class, verify.package_id, deadline=until)
            )
            if package is not None:
                last = package.source_version
        if last is not None and last > before:
            return last
        remaining = until.remaining_s()
        if remaining <= 0:
            return last
        verify.sleep(min(verify.poll_s, remaining))
