"""Following a refresh to every distribution point (until=distributed): the pure core.

    state = FollowState.accepted(v0, now)                 # at acceptance
    state = state.with_targets(rows, max_targets)         # the DP rows not being removed
    step  = started(state, now=..., policy=...)           # the first `distributing` event
    step  = assess(state, package_version, rows, now=..., policy=...)   # each poll

Two phases. Phase one waits for the package's SourceVersion to pass V0 (DistMgr processed the
refresh): that version is V1. Phase two waits for every target row to read State 0 **at V1 or
later**; a row still at the old version in State 0 is waiting, never done (the V0/V1 trap,
docs/configmgr.md). Nothing here waits or reads: the use case polls, re-queues the request with
the `FollowState` in its retry state between polls (no thread, no provider slot held), and asks
`assess` what the latest read means.

Row statuses: `done` (State 0 at V1+), `waiting` (queued, copying, a pull DP downloading, a DP
waiting for its schedule, or still at the old version: nothing wrong seen), `retrying` (State 2),
`failed` (State 3, or retrying for longer than `retrying_failed_after_s`), `unknown` (a State the
SDK does not list, or the read was cut before the row), `removed` (the row is leaving the DP,
States 4-6, or is gone: no longer a target).

Redistribution (opt-in, worker/domain/redistribution.py decides which rows): a DP the worker sent
RefreshNow (`with_redistributions`) and that still reads State 3 counts as `retrying` until it is
seen in another state or `redistribute_settle_s` has passed (the Put may not have reached DistMgr
yet); its retrying clock starts at the Put.

Verdicts: `distributed` (every target done or removed), `distributed_with_failures` (nothing
waiting, retrying or unknown, some failed), `distribution_timed_out` (the deadline passed first),
else `following` (poll again after `next_poll_s`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal

from config.settings import FollowSettings
from worker.domain.distribution import DpMessage, DpState, DpStatusRow, dp_name_from_nal

__all__ = [
    "COUNT_KEYS",
    "FollowState",
    "FollowStep",
    "Redistribution",
    "RowReport",
    "RowStatus",
    "Verdict",
    "assess",
    "next_poll_s",
    "started",
]

RowStatus = Literal["done", "waiting", "retrying", "failed", "unknown", "removed"]
Verdict = Literal["following", "distributed", "distributed_with_failures", "distribution_timed_out"]
COUNT_KEYS: Final[tuple[RowStatus, ...]] = ("done", "waiting", "retrying", "failed", "unknown", "removed")
# Stragglers first in an outcome's row list: what an administrator looks for.
_ROW_ORDER: Final = {"failed": 0, "retrying": 1, "unknown": 2, "waiting": 3, "removed": 4, "done": 5}
_BUSY: Final = frozenset({"waiting", "retrying", "unknown"})
_STATUS_OF_STATE: Final[dict[DpState, RowStatus]] = {
    DpState.INSTALL_PENDING: "waiting",
    DpState.CONTENT_UPDATING: "waiting",
    DpState.CONTENT_MONITORING: "waiting",
    DpState.INSTALL_RETRYING: "retrying",
    DpState.INSTALL_FAILED: "failed",
    DpState.REMOVAL_PENDING: "removed",
    DpState.REMOVAL_RETRYING: "removed",
    DpState.REMOVAL_FAILED: "removed",
}
_UINT32_MAX: Final = 0xFFFFFFFF
_MAX_ERROR_CHARS: Final = 300


@dataclass(frozen=True)
class Redistribution:
    """RefreshNow sent to one target DP by this request (the latest one per DP is kept).

    `error_kind`/`error_message`: the provider refused the Put (reported, not fatal; never retried
    within the window: a timed-out Put may have landed). `moved`: the DP was seen in a state
    other than failed since, so a later State 3 is a new failure.
    """

    nal_path: str
    at: float
    error_kind: str | None = None
    error_message: str | None = None
    moved: bool = False

    @property
    def landed(self) -> bool:
        return self.error_kind is None

    @classmethod
    def refused(cls, nal_path: str, at: float, kind: str, message: str) -> Redistribution:
        return cls(nal_path, at, error_kind=kind[:64], error_message=message[:_MAX_ERROR_CHARS])


@dataclass(frozen=True)
class FollowState:
    """What survives between polls of a followed request (in its retry state, so it travels in the message).

    `targets` are the NAL paths of the package's DP rows at acceptance that were not being
    removed (None until read). `retrying_since` remembers when each target was first seen
    retrying, so "retrying too long" needs no timestamp from the provider.
    """

    v0: int
    started_at: float
    v1: int | None = None
    targets: tuple[str, ...] | None = None
    polls: int = 0
    retrying_since: tuple[tuple[str, float], ...] = ()
    # The counts last reported (COUNT_KEYS order): a `distributing` event goes out only when they change.
    reported: tuple[int, ...] | None = None
    # RefreshNow sent by this request, the latest per target DP (opt-in redistribution).
    redistributed: tuple[Redistribution, ...] = ()

    @classmethod
    def accepted(cls, v0: int, now: float) -> FollowState:
        return cls(v0=v0, started_at=now)

    def with_targets(self, rows: Iterable[DpStatusRow], max_targets: int) -> FollowState:
        """The targets: rows of the package not being removed, the first `max_targets` by NAL path."""
        nal_paths = sorted({row.nal_path for row in rows if not row.leaving})
        return replace(self, targets=tuple(nal_paths[:max_targets]))

    def with_redistributions(self, sent: Iterable[Redistribution]) -> FollowState:
        """This state with RefreshNow sent to some targets: each replaces that DP's earlier entry, and
        a landed one restarts the DP's retrying clock (a DP retrying for hours is not failed at once)."""
        latest = {entry.nal_path: entry for entry in self.redistributed}
        since = dict(self.retrying_since)
        for entry in sent:
            latest[entry.nal_path] = entry
            if entry.landed:
                since[entry.nal_path] = entry.at
        return replace(
            self,
            redistributed=tuple(sorted(latest.values(), key=lambda entry: entry.nal_path)),
            retrying_since=tuple(sorted(since.items())),
        )

    def deadline_at(self, policy: FollowSettings) -> float:
        return self.started_at + policy.deadline_s

    def plausible(self, now: float, max_age_s: float, max_targets: int) -> bool:
        """False for a state no worker wrote (a producer can forge retry_state): the caller starts afresh."""
        versions = 0 <= self.v0 <= _UINT32_MAX and (self.v1 is None or self.v0 < self.v1 <= _UINT32_MAX)
        started = math.isfinite(self.started_at) and now - max_age_s <= self.started_at <= now + 60.0
        if not (versions and started and 0 <= self.polls <= 100_000):
            return False
        targets = self.targets or ()
        # Each target becomes an outcome row: only NAL paths we would have read, as many as we keep.
        if len(targets) > max_targets or any(dp_name_from_nal(nal_path) is None for nal_path in targets):
            return False
        known = set(targets)
        if any(nal not in known or not math.isfinite(at) for nal, at in self.retrying_since):
            return False
        if len({entry.nal_path for entry in self.redistributed}) != len(self.redistributed) or not all(
            _plausible_redistribution(entry, known, now) for entry in self.redistributed
        ):
            return False
        return self.reported is None or len(self.reported) == len(COUNT_KEYS)


def _plausible_redistribution(entry: Redistribution, targets: set[str], now: float) -> bool:
    if entry.error_kind is None or entry.error_message is None:
        error_fits = entry.error_kind is None and entry.error_message is None
    else:
        error_fits = len(entry.error_kind) <= 64 and len(entry.error_message) <= _MAX_ERROR_CHARS
    return entry.nal_path in targets and math.isfinite(entry.at) and entry.at <= now + 60.0 and error_fits


@dataclass(frozen=True)
class RowReport:
    """One target DP as an outcome lists it."""

    dp: str
    nal_path: str
    status: RowStatus
    state: int | None  # the summarizer's raw State; None: no row read
    source_version: int | None
    message_id: int | None = None
    message_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # the keys are the outcome's DISTRIBUTION_ROW_KEYS, in order


@dataclass(frozen=True)
class FollowStep:
    """What one poll means: the verdict, the counts, the rows, the state to carry to the next poll."""

    verdict: Verdict
    state: FollowState
    counts: dict[str, int]
    rows: tuple[RowReport, ...]
    next_poll_s: float | None  # None once final
    # RefreshNow sent (or refused) in this poll: a `distributing` event tells it even if no count moved.
    redistributed_now: tuple[Redistribution, ...] = ()
    # SourceVersion passed V0 in this poll (phase two begins): told too, counts moved or not, so a
    # bulk's stragglers report stops counting the package as held at the site server.
    source_updated_now: bool = False

    @property
    def news(self) -> bool:
        """Worth a `distributing` event: counts moved, a redistribution, or V1 just seen."""
        return self.counts_changed or bool(self.redistributed_now) or self.source_updated_now

    @property
    def final(self) -> bool:
        return self.verdict != "following"

    @property
    def counts_changed(self) -> bool:
        return self.state.reported != _count_tuple(self.counts)

    def reported(self) -> FollowStep:
        """This step with its counts marked as told (a `distributing` event carried them)."""
        return replace(self, state=replace(self.state, reported=_count_tuple(self.counts)))


def next_poll_s(polls: int, policy: FollowSettings) -> float:
    """The wait before the next poll: first_poll_s, times poll_multiplier per poll made, capped."""
    exponent = min(polls, 64)  # 2**64 times a minute is past any cap: stop the float growing
    return min(policy.max_poll_s, policy.first_poll_s * policy.poll_multiplier**exponent)


def started(state: FollowState, *, now: float, policy: FollowSettings) -> FollowStep:
    """The step at acceptance: no poll made yet, every target waiting, the first poll after first_poll_s."""
    counts = _counts(())
    counts["waiting"] = len(state.targets or ())
    wait_s = min(policy.first_poll_s, state.deadline_at(policy) - now)
    return FollowStep("following", state, counts, (), max(0.0, wait_s))


def assess(
    state: FollowState,
    *,
    package_version: int | None,
    rows: Sequence[DpStatusRow] | None,
    messages: Sequence[DpMessage] = (),
    truncated: bool = False,
    settled_at: int | None = None,
    now: float,
    policy: FollowSettings,
) -> FollowStep:
    """The verdict after one poll.

    `package_version`: the package's SourceVersion just read (phase one; None if not read).
    `rows`: the package's DP rows just read (phase two; None if not read this poll).
    `truncated`: the read stopped at its row bound, so a target missing from `rows` is unknown, not removed.
    `settled_at`: `rows` came from a filtered read; a target missing from them is installed at
    this SourceVersion or later (done, when that is V1 or later).
    """
    step = _assess(
        state,
        package_version=package_version,
        rows=rows,
        messages=messages,
        truncated=truncated,
        settled_at=settled_at,
        now=now,
        policy=policy,
    )
    return replace(step, source_updated_now=True) if state.v1 is None and step.state.v1 is not None else step


def _assess(
    state: FollowState,
    *,
    package_version: int | None,
    rows: Sequence[DpStatusRow] | None,
    messages: Sequence[DpMessage],
    truncated: bool,
    settled_at: int | None,
    now: float,
    policy: FollowSettings,
) -> FollowStep:
    polled = replace(state, polls=state.polls + 1)
    timed_out = now >= state.deadline_at(policy)
    if polled.v1 is None and package_version is not None and package_version > polled.v0:
        polled = replace(polled, v1=package_version)
    if polled.v1 is None or rows is None or polled.targets is None:
        counts = _held_counts(polled)
        verdict: Verdict = "distribution_timed_out" if timed_out else "following"
        return _step(verdict, polled, counts, (), now=now, policy=policy)
    if settled_at is not None and settled_at < polled.v1:
        # Left out as installed at an older version than ours: a missing target is unknown.
        settled_at, truncated = None, True
    reports, retrying_since, moved = _classify(
        polled, rows, messages, truncated=truncated, settled_at=settled_at, now=now, policy=policy
    )
    redistributed = tuple(replace(e, moved=True) if e.nal_path in moved else e for e in polled.redistributed)
    polled = replace(polled, retrying_since=retrying_since, redistributed=redistributed)
    counts = _counts(report.status for report in reports)
    if not any(counts[key] for key in _BUSY):
        verdict = "distributed_with_failures" if counts["failed"] else "distributed"
    else:
        verdict = "distribution_timed_out" if timed_out else "following"
    ordered = tuple(sorted(reports, key=lambda r: (_ROW_ORDER[r.status], r.dp.lower(), r.nal_path)))
    return _step(verdict, polled, counts, ordered, now=now, policy=policy)


def _step(
    verdict: Verdict,
    state: FollowState,
    counts: dict[str, int],
    rows: tuple[RowReport, ...],
    *,
    now: float,
    policy: FollowSettings,
) -> FollowStep:
    wait_s = None
    if verdict == "following":
        # Never past the deadline: the last poll lands on it, so a timeout is reported on time.
        wait_s = max(0.0, min(next_poll_s(state.polls - 1, policy), state.deadline_at(policy) - now))
    return FollowStep(verdict, state, counts, rows, wait_s)


def _classify(
    state: FollowState,
    rows: Sequence[DpStatusRow],
    messages: Sequence[DpMessage],
    *,
    truncated: bool,
    settled_at: int | None,
    now: float,
    policy: FollowSettings,
) -> tuple[list[RowReport], tuple[tuple[str, float], ...], set[str]]:
    """The target rows' reports, who is retrying since when, and which redistributed DPs moved."""
    assert state.v1 is not None and state.targets is not None
    by_nal = {row.nal_path: row for row in rows}
    last_message = {message.nal_path: message for message in messages}
    since = dict(state.retrying_since)
    pending = {e.nal_path: e for e in state.redistributed if e.landed and not e.moved}
    kept: dict[str, float] = {}
    moved: set[str] = set()
    reports: list[RowReport] = []
    for nal_path in state.targets:
        row = by_nal.get(nal_path)
        if row is None and settled_at is not None:
            row = _settled_row(nal_path, settled_at)
        status = _row_status(row, state.v1, truncated)
        sent = pending.get(nal_path)
        if sent is not None and row is not None and row.state is not DpState.INSTALL_FAILED:
            moved.add(nal_path)
        elif sent is not None and status == "failed" and now - sent.at < policy.redistribute_settle_s:
            # The failure the Put answered, until DistMgr picks the re-send up.
            status = "retrying"
            kept[nal_path] = since.get(nal_path, sent.at)
        elif status == "retrying":
            first = kept[nal_path] = since.get(nal_path, now)
            if now - first >= policy.retrying_failed_after_s:
                status = "failed"
        message = last_message.get(nal_path)
        reports.append(
            RowReport(
                dp=(row.dp_name if row is not None else None) or dp_name_from_nal(nal_path) or "?",
                nal_path=nal_path,
                status=status,
                state=row.raw_state if row is not None else None,
                source_version=row.source_version if row is not None else None,
                message_id=message.message_id if message is not None else None,
                message_at=message.last_update if message is not None else None,
            )
        )
    return reports, tuple(sorted(kept.items())), moved


def _settled_row(nal_path: str, version: int) -> DpStatusRow:
    """A target a filtered read left out: installed at `version` or later (the lowest it can hold)."""
    return DpStatusRow(
        package_id="",
        nal_path=nal_path,
        dp_name=dp_name_from_nal(nal_path) or "?",
        state=DpState.INSTALLED,
        raw_state=int(DpState.INSTALLED),
        source_version=version,
    )


def _row_status(row: DpStatusRow | None, v1: int, truncated: bool) -> RowStatus:
    if row is None:
        return "unknown" if truncated else "removed"
    if row.state is DpState.INSTALLED:
        return "done" if row.installed_at(v1) else "waiting"  # the old version in State 0: not done
    return _STATUS_OF_STATE.get(row.state, "unknown") if row.state is not None else "unknown"


def _held_counts(state: FollowState) -> dict[str, int]:
    """The counts of a poll that read no rows: the last ones told (a poll without rows, skipped or
    left to the rollup, must not tell the DPs done so far as waiting again), else all waiting."""
    if state.reported is not None and state.targets is not None and sum(state.reported) == len(state.targets):
        return dict(zip(COUNT_KEYS, state.reported, strict=True))
    counts = _counts(())
    if state.targets is not None:
        counts["waiting"] = len(state.targets)
    return counts


def _counts(statuses: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)
    for status in statuses:
        counts[status] += 1
    return counts


def _count_tuple(counts: dict[str, int]) -> tuple[int, ...]:
    return tuple(counts[key] for key in COUNT_KEYS)
