"""Package Transfer Manager: copying each processed package to every distribution point (pure).

What ConfigMgr does once Distribution Manager has processed a refresh (SourceVersion V0 -> V1):
PkgXferMgr creates one job per distribution point (DP) that holds the package and copies the new
version to each, a limited number of jobs at a time, retrying a failed copy after a delay until
it gives up. The per-DP status rows (`SMS_PackageStatusDistPointsSummarizer.State`) move

    0 INSTALLED at V0  ->  7 CONTENT_UPDATING (1 INSTALL_PENDING if the DP never had it)
                       ->  0 INSTALLED at V1
                       or  2 INSTALL_RETRYING  -> ... ->  3 INSTALL_FAILED

and until DistMgr has processed the package every row still reads State 0 at V0: the trap a
client must not count as done. The model:

* `jobs` push transfers run at once, each taking `copy_time_s`; a pull DP downloads by itself
  (no push slot) and takes `copy_time_s * pull_copy_factor`.
* A failed attempt (an offline DP, or a draw under the DP's failure share: seeded per job and
  attempt, so runs repeat) is retried `retry_delay_s` later, `retry_count` times, then the row
  is failed and its job stays (State 6) until a RefreshNow re-sends it.
* A DP with a schedule starts transfers only while its window is open (the first `open_s` of
  every `period_s`); a closed schedule (no period) holds them until it is changed.
* A new version for a row with a job in flight supersedes that job (its slot stays busy until
  the attempt under way ends; its result is ignored).
* Time is replayed lazily like DistMgr's (emulator.sms.distmgr): `replay(until)` applies every
  start and finish due by then, in time order, so polling often or rarely gives one history.
  The owner feeds DistMgr's finishes in at the moment they happened.

Rows of packages never distributed since start are not stored (the owner shows them installed
at the package's version): memory grows with the packages refreshed, not the catalogue.
Not thread-safe: the owner (the catalogue, under the provider's lock) serialises calls.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "JOB_FAILED",
    "JOB_IN_PROGRESS",
    "JOB_PENDING",
    "MESSAGE_ERROR",
    "MESSAGE_IN_PROGRESS",
    "MESSAGE_SUCCESS",
    "STATE_CONTENT_UPDATING",
    "STATE_INSTALLED",
    "STATE_INSTALL_FAILED",
    "STATE_INSTALL_PENDING",
    "STATE_INSTALL_RETRYING",
    "DistributionPoint",
    "Job",
    "PkgXferMgr",
    "Row",
    "Schedule",
    "StatusMessage",
]

# SMS_PackageStatusDistPointsSummarizer.State (Microsoft's SDK page of the class).
STATE_INSTALLED: Final = 0
STATE_INSTALL_PENDING: Final = 1
STATE_INSTALL_RETRYING: Final = 2
STATE_INSTALL_FAILED: Final = 3
STATE_CONTENT_UPDATING: Final = 7

# SMS_DistributionJob.State (0 pending .. 3 in progress, 5 complete, 6 failed).
JOB_PENDING: Final = 0
JOB_IN_PROGRESS: Final = 3
JOB_FAILED: Final = 6

# SMS_DistributionDPStatus.MessageState (1 success, 2 in progress, 3 error).
MESSAGE_SUCCESS: Final = 1
MESSAGE_IN_PROGRESS: Final = 2
MESSAGE_ERROR: Final = 3


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A DP's last status message. The ids are the emulator's choice (see docs/emulator.md)."""

    message_id: int
    state: int


_MSG_SUCCESS: Final = StatusMessage(2330, MESSAGE_SUCCESS)  # content distributed to the DP
_MSG_QUEUED: Final = StatusMessage(2310, MESSAGE_IN_PROGRESS)  # distribution in progress
_MSG_PULL_WAITING: Final = StatusMessage(2391, MESSAGE_IN_PROGRESS)  # pull DP asked to download
_MSG_ATTEMPT_FAILED: Final = StatusMessage(2324, MESSAGE_ERROR)  # copy failed, will retry
_MSG_GAVE_UP: Final = StatusMessage(2329, MESSAGE_ERROR)  # retries used up: failed


@dataclass(frozen=True, slots=True)
class Schedule:
    """Transfers start only in the first `open_s` of every `period_s` (from `origin`); period None: closed."""

    period_s: float | None
    open_s: float = 0.0
    origin: float = 0.0

    def next_open(self, at: float) -> float:
        """The first moment >= `at` the window is open (inf when closed for good)."""
        if self.period_s is None or self.open_s <= 0:
            return math.inf
        if self.open_s >= self.period_s:
            return at
        phase = (at - self.origin) % self.period_s
        return at if phase < self.open_s else at + (self.period_s - phase)


@dataclass(slots=True)
class DistributionPoint:
    """One DP of the site; the fault fields are changed at run time through the owner."""

    index: int
    name: str  # the server's FQDN
    nal_path: str
    site_code: str  # the site the DP belongs to: the provider's own, or a child site's
    pull: bool = False
    offline: bool = False
    failure_share: float = 0.0
    schedule: Schedule | None = None
    parked: list[Job] = field(default_factory=list)  # jobs held by a closed schedule

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[0]

    def next_open(self, at: float) -> float:
        return at if self.schedule is None else self.schedule.next_open(at)


@dataclass(slots=True)
class Job:
    """One PkgXferMgr job: a package version to one DP."""

    job_id: int
    package_id: str
    dp: int
    version: int
    total_bytes: int
    created_at: float
    ready_at: float
    state: int = JOB_PENDING
    attempt: int = 0  # failed attempts so far
    started_at: float | None = None
    finish_at: float | None = None
    live: bool = True  # False once superseded


@dataclass(slots=True)
class Row:
    """One package on one DP, as the status classes show it (times on the model's clock)."""

    state: int
    version: int
    changed_at: float
    last_copied: float | None
    message: StatusMessage
    message_at: float
    job: Job | None = None


class PkgXferMgr:
    """DP rows and the transfer jobs between them, advanced lazily on an injected clock."""

    def __init__(
        self,
        *,
        dps: list[DistributionPoint],
        jobs: int,
        copy_time_s: float,
        pull_copy_factor: float,
        retry_count: int,
        retry_delay_s: float,
        seed: int,
        clock: Callable[[], float],
    ) -> None:
        if jobs < 1:
            raise ValueError(f"PkgXferMgr needs at least one job slot, got {jobs}")
        if retry_count < 0:
            raise ValueError(f"retry count must be >= 0, got {retry_count}")
        self.dps = dps
        self._jobs = jobs
        self._copy_time_s = _checked_duration("copy time", copy_time_s)
        self._pull_copy_factor = _checked_duration("pull copy factor", pull_copy_factor)
        self._retry_count = retry_count
        self._retry_delay_s = _checked_duration("retry delay", retry_delay_s)
        self._seed = seed
        self._clock = clock
        self._rows: dict[str, dict[int, Row]] = {}  # package_id -> dp index -> row
        self._push_ready: list[tuple[float, int, Job]] = []  # heap of (ready_at, seq, job)
        self._pull_ready: list[tuple[float, int, Job]] = []
        self._running: list[tuple[float, int, Job]] = []  # heap of (finish_at, seq, job)
        self._busy = 0  # push slots in use (superseded attempts included, until they end)
        self._seq = 0
        self._next_job_id = 1
        self._held = False
        self._not_before = -math.inf
        self._replayed_to = -math.inf
        self._counts = {"jobs": 0, "attempts": 0, "succeeded": 0, "failed_attempts": 0, "gave_up": 0}

    # ------------------------------------------------------------------ work

    def submit(self, package_id: str, *, version: int, old_version: int, total_bytes: int, at: float) -> None:
        """DistMgr processed `package_id` (now at `version`) at `at`: a job for every DP.

        The owner replays to now once it has submitted every package DistMgr finished."""
        self.replay(at)
        for dp in self.dps:
            self._new_job(package_id, dp.index, version=version, old_version=old_version, total_bytes=total_bytes)

    def redistribute(self, package_id: str, dp_index: int, *, version: int, total_bytes: int) -> None:
        """RefreshNow: re-send the package's current version to one DP, now."""
        self.replay(self._clock())
        self._new_job(package_id, dp_index, version=version, old_version=version, total_bytes=total_bytes)
        self.replay(self._clock())

    def _new_job(self, package_id: str, dp_index: int, *, version: int, old_version: int, total_bytes: int) -> None:
        at = self._replayed_to
        rows = self._rows.setdefault(package_id, {})
        row = rows.get(dp_index)
        if row is None:
            # Installed at the old version since before the model started: when is unknown.
            row = rows[dp_index] = Row(STATE_INSTALLED, old_version, at, None, _MSG_SUCCESS, at)
        if row.job is not None:
            row.job.live = False
        # A DP holding some version is "updating"; one that never had the package is "pending".
        had_content = row.version > 0
        dp = self.dps[dp_index]
        job = Job(self._next_job_id, package_id, dp_index, version, total_bytes, created_at=at, ready_at=at)
        self._next_job_id += 1
        self._counts["jobs"] += 1
        row.job = job
        self._set(row, STATE_CONTENT_UPDATING if had_content else STATE_INSTALL_PENDING, at)
        row.message, row.message_at = (_MSG_PULL_WAITING if dp.pull else _MSG_QUEUED), at
        self._queue(job)

    def replay(self, until: float) -> None:
        """Apply, in time order, every start and finish due by `until`."""
        until = max(until, self._replayed_to)
        while True:
            start = self._next_start()
            finish_at = self._running[0][0] if self._running else math.inf
            # At equal times a finish goes first: its slot is free for the start.
            if finish_at <= until and (start is None or finish_at <= start[0]):
                self._finish_next()
            elif start is not None and start[0] <= until:
                self._start(*start)
            else:
                break
        self._replayed_to = until

    # ------------------------------------------------------------------ control

    def hold(self) -> None:
        """Start no transfer (those under way still end)."""
        self.replay(self._clock())
        self._held = True

    def release(self) -> None:
        now = self._clock()
        self.replay(now)
        if self._held:
            self._held = False
            self._not_before = now
            self.replay(now)

    def set_offline(self, dp_index: int, offline: bool) -> None:
        self.replay(self._clock())
        self.dps[dp_index].offline = offline

    def set_failure_share(self, dp_index: int, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"failure share must be between 0 and 1, got {share!r}")
        self.replay(self._clock())
        self.dps[dp_index].failure_share = share

    def set_schedule(self, dp_index: int, schedule: Schedule | None) -> None:
        """Give a DP a schedule (None: none); jobs it held are looked at again from now."""
        now = self._clock()
        self.replay(now)
        dp = self.dps[dp_index]
        dp.schedule = schedule
        parked, dp.parked = dp.parked, []
        for job in parked:
            job.ready_at = now
            self._queue(job)
        self.replay(now)

    # ------------------------------------------------------------------ observation (after replay)

    def rows(self, package_id: str) -> dict[int, Row]:
        """The stored rows of a package by DP index (none: never distributed since start)."""
        return self._rows.get(package_id, {})

    def open_jobs(self) -> Iterator[Job]:
        """Jobs not yet complete (pending, in progress, retrying, failed), oldest first."""
        for rows in self._rows.values():
            for row in rows.values():
                if row.job is not None:
                    yield row.job

    def remaining_bytes(self, job: Job) -> int:
        if job.state != JOB_IN_PROGRESS or job.started_at is None or job.finish_at is None:
            return job.total_bytes
        duration = job.finish_at - job.started_at
        if duration <= 0:
            return 0
        left = min(1.0, max(0.0, (job.finish_at - self._replayed_to) / duration))
        return int(job.total_bytes * left)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: settings, queue sizes, counters, and each DP with its faults."""
        return {
            "jobs": self._jobs,
            "copy_time_s": self._copy_time_s,
            "pull_copy_factor": self._pull_copy_factor,
            "retry_count": self._retry_count,
            "retry_delay_s": self._retry_delay_s,
            "held": self._held,
            "queued": sum(1 for _at, _seq, job in (*self._push_ready, *self._pull_ready) if job.live),
            "in_progress": sum(1 for _at, _seq, job in self._running if job.live),
            "counters": dict(self._counts),
            "distribution_points": [
                {
                    "name": dp.name,
                    "nal_path": dp.nal_path,
                    "pull": dp.pull,
                    "offline": dp.offline,
                    "failure_share": dp.failure_share,
                    "schedule": None
                    if dp.schedule is None
                    else {"period_s": dp.schedule.period_s, "open_s": dp.schedule.open_s},
                    "held_by_schedule": len(dp.parked),
                }
                for dp in self.dps
            ],
        }

    # ------------------------------------------------------------------ replay

    def _queue(self, job: Job) -> None:
        self._seq += 1
        heap = self._pull_ready if self.dps[job.dp].pull else self._push_ready
        heapq.heappush(heap, (job.ready_at, self._seq, job))

    def _next_start(self) -> tuple[float, Job, bool] | None:
        """The next job to start, when, and whether it takes a push slot."""
        if self._held:
            return None
        for heap in (self._push_ready, self._pull_ready):
            while heap and not heap[0][2].live:
                heapq.heappop(heap)
        candidates: list[tuple[float, int, Job, bool]] = []
        if self._pull_ready:
            at, seq, job = self._pull_ready[0]
            candidates.append((max(at, self._not_before, self._replayed_to), seq, job, False))
        if self._push_ready and self._busy < self._jobs:
            at, seq, job = self._push_ready[0]
            candidates.append((max(at, self._not_before, self._replayed_to), seq, job, True))
        if not candidates:
            return None
        at, _seq, job, push = min(candidates, key=lambda item: (item[0], item[1]))
        return at, job, push

    def _start(self, at: float, job: Job, push: bool) -> None:
        heapq.heappop(self._push_ready if push else self._pull_ready)
        self._replayed_to = max(self._replayed_to, at)
        dp = self.dps[job.dp]
        open_at = dp.next_open(at)
        if open_at > at:
            if math.isinf(open_at):
                dp.parked.append(job)
            else:
                job.ready_at = open_at
                self._queue(job)
            return
        duration = self._copy_time_s * (self._pull_copy_factor if dp.pull else 1.0)
        job.state, job.started_at, job.finish_at = JOB_IN_PROGRESS, at, at + duration
        self._counts["attempts"] += 1
        if push:
            self._busy += 1
        self._seq += 1
        heapq.heappush(self._running, (job.finish_at, self._seq, job))

    def _finish_next(self) -> None:
        at, _seq, job = heapq.heappop(self._running)
        self._replayed_to = max(self._replayed_to, at)
        dp = self.dps[job.dp]
        if not dp.pull:
            self._busy -= 1
        if not job.live:
            return
        row = self._rows[job.package_id][job.dp]
        if not dp.offline and not self._draw_failure(job, dp):
            self._counts["succeeded"] += 1
            row.version, row.last_copied, row.job = job.version, at, None
            self._set(row, STATE_INSTALLED, at)
            row.message, row.message_at = _MSG_SUCCESS, at
            return
        self._counts["failed_attempts"] += 1
        job.attempt += 1
        if job.attempt > self._retry_count:
            self._counts["gave_up"] += 1
            job.state = JOB_FAILED
            self._set(row, STATE_INSTALL_FAILED, at)
            row.message, row.message_at = _MSG_GAVE_UP, at
            return
        job.state, job.ready_at = JOB_PENDING, at + self._retry_delay_s
        self._set(row, STATE_INSTALL_RETRYING, at)
        row.message, row.message_at = _MSG_ATTEMPT_FAILED, at
        self._queue(job)

    def _draw_failure(self, job: Job, dp: DistributionPoint) -> bool:
        if dp.failure_share <= 0.0:
            return False
        # Seeded per job and attempt (str seeds hash deterministically): one history per seed.
        draw = random.Random(f"{self._seed}|{job.package_id}|{dp.name}|{job.job_id}|{job.attempt}").random()
        return draw < dp.failure_share

    @staticmethod
    def _set(row: Row, state: int, at: float) -> None:
        if row.state != state:
            row.state, row.changed_at = state, at


def _checked_duration(what: str, seconds: float) -> float:
    value = float(seconds)
    if not 0.0 <= value < math.inf:  # NaN fails too
        raise ValueError(f"{what} must be a finite number >= 0, got {seconds!r}")
    return value
