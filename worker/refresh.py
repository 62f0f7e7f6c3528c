"""One attempt at refreshing one package, independent of Celery.

Read the package (Get), call RefreshPkgSource (Invoke), classify the ReturnValue, and
optionally wait, bounded, for DistMgr to bump SourceVersion. Failures are raised as typed
`RefreshError`s; the caller decides about retries (`worker.decide`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from worker.classify import error_for_medium_fault, refresh_outcome
from worker.errors import MediumNotReadyError, RefreshError, ReturnValueError
from worker.packages import PackageInfo

__all__ = ["AttemptResult", "RefreshClient", "attempt_refresh"]

AttemptStatus = Literal["accepted", "source_updated"]


class RefreshClient(Protocol):
    """What an attempt needs from the SMS Provider client (`worker.sccm.SccmClient`)."""

    def get_package(self, package_class: str, package_id: str) -> PackageInfo: ...

    def refresh(self, package_class: str, package_id: str) -> int: ...


@dataclass(frozen=True)
class AttemptResult:
    status: AttemptStatus
    return_value: int
    package: PackageInfo
    source_version_before: int | None
    source_version_after: int | None


def attempt_refresh(
    client: RefreshClient,
    package_class: str,
    package_id: str,
    *,
    verify_timeout_s: float = 0.0,
    verify_poll_s: float = 1.0,
    known_version_before: int | None = None,
    on_package: Callable[[PackageInfo], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> AttemptResult:
    """Refresh once; raise MediumNotReadyError / ReturnValueError / transport errors on failure."""
    package = client.get_package(package_class, package_id)
    if on_package is not None:
        on_package(package)
    before = known_version_before if known_version_before is not None else package.source_version
    try:
        return_value = client.refresh(package_class, package_id)
    except RefreshError as exc:
        # A WMI generic failure during RefreshPkgSource on a STORAGE_COMPRESS package is the
        # SDK's "medium not ready" shape; everything else keeps its own meaning.
        raise error_for_medium_fault(exc, package.pkg_source_flag) from None

    verdict = refresh_outcome(return_value, package.pkg_source_flag)
    if verdict == "medium_not_ready":
        raise MediumNotReadyError(
            f"RefreshPkgSource returned {return_value}: source medium of STORAGE_COMPRESS package not ready",
            code=return_value,
        )
    if verdict != "accepted":
        flag = package.pkg_source_flag
        hint = " (STORAGE_NO_SOURCE: nothing to refresh)" if flag == 1 else ""
        raise ReturnValueError(f"RefreshPkgSource returned {return_value}{hint}", code=return_value)

    if verify_timeout_s <= 0 or before is None:
        return AttemptResult("accepted", return_value, package, before, None)
    after = _wait_for_new_version(
        client,
        package_class=package_class,
        package_id=package_id,
        before=before,
        timeout_s=verify_timeout_s,
        poll_s=verify_poll_s,
        sleep=sleep,
        clock=clock,
    )
    status: AttemptStatus = "source_updated" if after is not None and after > before else "accepted"
    return AttemptResult(status, return_value, package, before, after)


def _wait_for_new_version(
    client: RefreshClient,
    *,
    package_class: str,
    package_id: str,
    before: int,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> int | None:
    """Poll Get until SourceVersion > before or the timeout; the last version seen (None if none)."""
    deadline = clock() + timeout_s
    last: int | None = None
    while True:
        # Verification is best effort: the refresh was already accepted.
        with contextlib.suppress(RefreshError):
            last = client.get_package(package_class, package_id).source_version
        if last is not None and last > before:
            return last
        remaining = deadline - clock()
        if remaining <= 0:
            return last
        sleep(min(poll_s, remaining))
