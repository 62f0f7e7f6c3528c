"""Following an accepted refresh to every DP (until=distributed): the reads of one poll.

    state = start_following(reader, gate, request, v0=..., now=..., policy=...)   # at acceptance
    step  = poll(reader, gate, request, state, now=..., policy=..., deadline=...)   # each later delivery

The decisions are worker/domain/follow.py's; this module only reads what a poll needs, each read
under a provider slot of its own (`gate`, the same follow-up priority as a verifying request's
Get) and none held between polls: the delivery re-queues the request with the new state
(worker/usecase/delivery.py, `_follow`). A read that fails, or finds no free slot, is skipped: the
poll says what it can, and the next one comes after the back-off.

One poll costs: phase one, one Get of the package (SourceVersion); once V1 is known, one WQL
read of the package's DP rows (`SMS_PackageStatusDistPointsSummarizer`); and, only when the
counts changed or the request ends, one of the DPs' last status messages. Each is a per-request
read today. `DistributionReader` is the seam for the per-site batcher (docs/configmgr.md,
"Following content to every DP"): one reader per site that answers every followed package of the
site from one chunked read per poll interval (200 packages a query, cached in Redis for the
interval) implements the same three calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar, runtime_checkable

from config.settings import FollowSettings
from errors import RefreshError
from worker.domain.deadline import Deadline
from worker.domain.distribution import DpMessage, DpStatusBatch, DpStatusRow
from worker.domain.follow import FollowState, FollowStep, assess, started
from worker.domain.packages import PackageInfo
from worker.domain.request import RefreshRequest
from worker.usecase.attempt import OperationGate

__all__ = ["DistributionReader", "poll", "start_following"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# Rows one followed package can have: its targets and a margin for rows that appeared since.
_ROW_MARGIN = 100


@runtime_checkable
class DistributionReader(Protocol):
    """What following needs from a site's SMS Provider (`worker.provider.client.SccmClient` has it)."""

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo: ...

    def read_dp_status(
        self, package_ids: Iterable[str], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...

    def read_dp_messages(
        self, package_ids: Iterable[str], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...


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
    batch = _gated(gate, request, "DP rows", lambda: _rows(reader, request, policy, deadline))
    if batch is not None and not batch.truncated:
        state = state.with_targets(batch.rows, policy.max_targets)
    return started(state, now=now, policy=policy)


def poll(
    reader: DistributionReader,
    gate: OperationGate,
    request: RefreshRequest,
    state: FollowState,
    *,
    now: float,
    policy: FollowSettings,
    deadline: Deadline | None = None,
) -> FollowStep:
    """One poll: SourceVersion until V1, then the DP rows (and their messages when worth telling)."""
    version = None
    if state.v1 is None:
        package = _gated(
            gate,
            request,
            "package",
            lambda: reader.get_package(request.package_class, request.package_id, deadline=deadline),
        )
        version = package.source_version if package is not None else None
        if version is None or version <= state.v0:
            return assess(state, package_version=version, rows=None, now=now, policy=policy)
    batch = _gated(gate, request, "DP rows", lambda: _rows(reader, request, policy, deadline))
    if batch is not None and state.targets is None and not batch.truncated:
        state = state.with_targets(batch.rows, policy.max_targets)
    rows: tuple[DpStatusRow, ...] | None = batch.rows if batch is not None else None
    truncated = batch.truncated if batch is not None else False
    step = assess(state, package_version=version, rows=rows, truncated=truncated, now=now, policy=policy)
    if rows is None or not (step.final or step.counts_changed):
        return step
    messages = _gated(gate, request, "DP messages", lambda: _messages(reader, request, state, deadline))
    if not messages:
        return step
    return assess(
        state, package_version=version, rows=rows, messages=messages, truncated=truncated, now=now, policy=policy
    )


def _rows(
    reader: DistributionReader, request: RefreshRequest, policy: FollowSettings, deadline: Deadline | None
) -> DpStatusBatch:
    return reader.read_dp_status([request.package_id], max_rows=policy.max_targets + _ROW_MARGIN, deadline=deadline)


def _messages(
    reader: DistributionReader, request: RefreshRequest, state: FollowState, deadline: Deadline | None
) -> tuple[DpMessage, ...]:
    bound = len(state.targets or ()) + _ROW_MARGIN
    return reader.read_dp_messages([request.package_id], max_rows=bound, deadline=deadline).messages


def _gated(gate: OperationGate, request: RefreshRequest, what: str, read: Callable[[], _T]) -> _T | None:
    """`read` under a slot of its own; None when no slot was free or the read failed (the poll goes on)."""
    try:
        return gate.run(read)
    except RefreshError as exc:
        log.info(
            "following %s/%s: reading its %s failed (%s); the next poll tries again",
            request.site_code,
            request.package_id,
            what,
            exc.kind,
        )
        return None
