"""Following an accepted refresh to every DP (until=distributed): the reads of one poll.

    state = start_following(reader, gate, request, v0=..., now=..., policy=...)   # at acceptance
    step  = poll(reader, gate, request, state, now=..., policy=..., deadline=...)   # each later delivery

The decisions are worker/domain/follow.py's; this module only reads what a poll needs through a
`DistributionReader`, and no provider slot is held between polls: the delivery re-queues the
request with the new state (worker/usecase/delivery.py, `_follow`). A read that fails, or finds
no free slot, is skipped: the poll says what it can, and the next one comes after the back-off.

One poll needs: in phase one the package's SourceVersion; once V1 is known its DP rows
(`SMS_PackageStatusDistPointsSummarizer`; a shared reader may answer None when the package's
rollup says no verdict is near, and the poll then tells the counts it told last); and, only in
the poll that ends the request, the DPs' last status messages (for the final's rows). A request
that redistributes passes `redistribute` (worker/usecase/redistribute.py): it runs after the
verdict, and a DP it sent RefreshNow is assessed again as redistributed. Two readers answer:

    DirectReader       one request's own reads, each under a provider slot of its own (`gate`):
                       a Get, a WQL read of its rows, a WQL read of its messages
    SiteSnapshots      (worker/stores/follow_snapshots.py) versions and rows of every package
                       followed at the site, read in chunks of 200 once per snapshot interval by
                       one worker and shared through Redis (rows only where the rollup
                       `SMS_ObjectContentExtraInfo` says a verdict may be near); messages as DirectReader
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar, runtime_checkable

from config.settings import FollowSettings
from errors import RefreshError
from worker.domain.deadline import Deadline
from worker.domain.distribution import DpMessage, DpStatusBatch, DpStatusRow
from worker.domain.follow import FollowState, FollowStep, Redistribution, assess, started
from worker.domain.packages import PackageInfo
from worker.domain.request import RefreshRequest
from worker.usecase.attempt import OperationGate

__all__ = ["DirectReader", "DistributionReader", "FollowClient", "Redistribute", "poll", "start_following"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# Rows one followed package can have: its targets and a margin for rows that appeared since.
_ROW_MARGIN = 100


class DistributionReader(Protocol):
    """What a poll reads. Each call may run provider operations under `gate` (a slot each) and
    answers None when it could not read now (no free slot); a provider error is raised."""

    def source_version(self, request: RefreshRequest, gate: OperationGate, *, deadline: Deadline | None) -> int | None:
        """The package's own SourceVersion (None: not read, or the provider omits it)."""
        ...

    def dp_rows(
        self,
        request: RefreshRequest,
        gate: OperationGate,
        *,
        max_rows: int,
        deadline: Deadline | None,
        required: bool = False,
        v1: int | None = None,
    ) -> DpStatusBatch | None:
        """The package's DP rows (`rows`; `truncated` if the bound was reached). None also when a
        cheaper read said no verdict is near (copies in flight), unless `required` (the targets
        are unknown, or the deadline passed and the final lists the DPs). With `v1` (the targets
        known), a shared read may leave out rows installed at `v1` or later (`settled_at`)."""
        ...

    def dp_messages(
        self, request: RefreshRequest, gate: OperationGate, *, max_rows: int, deadline: Deadline | None
    ) -> tuple[DpMessage, ...] | None:
        """The last status message of the package on each DP."""
        ...

    def forget(self, request: RefreshRequest, *, rows: bool) -> None:
        """The request is past phase one (`rows` False) or has its final (`rows` True): shared
        reads stop reading its package for it."""
        ...


@runtime_checkable
class FollowClient(Protocol):
    """The provider client's calls following uses (`worker.provider.client.SccmClient` has them)."""

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo: ...

    def read_dp_status(
        self, package_ids: Iterable[str], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...

    def read_dp_messages(
        self, package_ids: Iterable[str], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...

    def read_source_versions(
        self, package_ids: Iterable[str], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...


class DirectReader:
    """A request's own reads, one provider operation (or one WQL read) each, under a slot of its own."""

    def __init__(self, client: FollowClient) -> None:
        self._client = client

    def source_version(self, request: RefreshRequest, gate: OperationGate, *, deadline: Deadline | None) -> int | None:
        package = gate.run(
            lambda: self._client.get_package(request.package_class, request.package_id, deadline=deadline)
        )
        return package.source_version if package is not None else None

    def dp_rows(
        self,
        request: RefreshRequest,
        gate: OperationGate,
        *,
        max_rows: int,
        deadline: Deadline | None,
        required: bool = False,
        v1: int | None = None,
    ) -> DpStatusBatch | None:
        return gate.run(lambda: self._client.read_dp_status([request.package_id], max_rows=max_rows, deadline=deadline))

    def dp_messages(
        self, request: RefreshRequest, gate: OperationGate, *, max_rows: int, deadline: Deadline | None
    ) -> tuple[DpMessage, ...] | None:
        batch = gate.run(
            lambda: self._client.read_dp_messages([request.package_id], max_rows=max_rows, deadline=deadline)
        )
        return batch.messages if batch is not None else None

    def forget(self, request: RefreshRequest, *, rows: bool) -> None:
        return None  # nothing shared to leave


def start_following(
    reader: DistributionReader,
    gate: OperationGate,
    request: RefreshRequest,
    *,
    v0: int,
    now: float,
    policy: FollowSettings,
    deadline: Deadline | None = None,
) -> FollowStep:
    """V0 and the target set, recorded at acceptance; the first `distributing` step.

    The targets are read now, before DistMgr can have moved any row; if that read fails they are
    read at the first poll instead (DPs added to the package in between would then count too).
    """
    state = FollowState.accepted(v0, now)
    batch = _gated(request, "DP rows", lambda: _rows(reader, gate, request, policy, deadline, required=True))
    if batch is not None and not batch.truncated:
        state = state.with_targets(batch.rows, policy.max_targets)
    return started(state, now=now, policy=policy)


class Redistribute(Protocol):
    """What a poll that redistributes calls after its verdict (worker/usecase/redistribute.py)."""

    def __call__(self, step: FollowStep, rows: Sequence[DpStatusRow], now: float) -> tuple[Redistribution, ...]: ...


def poll(
    reader: DistributionReader,
    gate: OperationGate,
    request: RefreshRequest,
    state: FollowState,
    *,
    now: float,
    policy: FollowSettings,
    deadline: Deadline | None = None,
    redistribute: Redistribute | None = None,
) -> FollowStep:
    """One poll: SourceVersion until V1, then the DP rows (and their last messages for a final).

    With `redistribute`, the DPs it sent RefreshNow are assessed again as redistributed (a failed
    one is retrying again), so a poll that redistributes is not the final.
    """
    version = None
    if state.v1 is None:
        version = _gated(request, "SourceVersion", lambda: reader.source_version(request, gate, deadline=deadline))
        if version is None or version <= state.v0:
            return assess(state, package_version=version, rows=None, now=now, policy=policy)
        reader.forget(request, rows=False)
    # Rows whatever the rollup says when the targets are unknown, or for a final by the deadline.
    required = state.targets is None or now >= state.deadline_at(policy)
    # Rows installed at V1 may be left out only once the targets are known: they name the DPs.
    v1 = (state.v1 or version) if state.targets is not None else None
    batch = _gated(request, "DP rows", lambda: _rows(reader, gate, request, policy, deadline, required=required, v1=v1))
    if batch is not None and state.targets is None and not batch.truncated:
        state = state.with_targets(batch.rows, policy.max_targets)
    rows: tuple[DpStatusRow, ...] | None = batch.rows if batch is not None else None
    truncated = batch.truncated if batch is not None else False
    settled_at = batch.settled_at if batch is not None else None

    def assessed(state: FollowState, messages: Sequence[DpMessage] = ()) -> FollowStep:
        return assess(
            state,
            package_version=version,
            rows=rows,
            messages=messages,
            truncated=truncated,
            settled_at=settled_at,
            now=now,
            policy=policy,
        )

    step = assessed(state)
    sent: tuple[Redistribution, ...] = ()
    if redistribute is not None and rows is not None:
        sent = redistribute(step, rows, now)
        if sent:
            state = state.with_redistributions(sent)
            step = replace(assessed(state), redistributed_now=sent)
    if step.final:
        reader.forget(request, rows=True)
    if rows is None or not step.final:
        return step
    bound = len(state.targets or ()) + _ROW_MARGIN
    messages = _gated(
        request, "DP messages", lambda: reader.dp_messages(request, gate, max_rows=bound, deadline=deadline)
    )
    if not messages:
        return step
    return replace(assessed(state, messages), redistributed_now=sent)


def _rows(
    reader: DistributionReader,
    gate: OperationGate,
    request: RefreshRequest,
    policy: FollowSettings,
    deadline: Deadline | None,
    *,
    required: bool,
    v1: int | None = None,
) -> DpStatusBatch | None:
    return reader.dp_rows(
        request, gate, max_rows=policy.max_targets + _ROW_MARGIN, deadline=deadline, required=required, v1=v1
    )


def _gated(request: RefreshRequest, what: str, read: Callable[[], _T | None]) -> _T | None:
    """`read`'s answer; None when it could not read now or the read failed (the poll goes on)."""
    try:
        return read()
    except RefreshError as exc:
        log.info(
            "following %s/%s: reading its %s failed (%s); the next poll tries again",
            request.site_code,
            request.package_id,
            what,
            exc.kind,
        )
        return None
