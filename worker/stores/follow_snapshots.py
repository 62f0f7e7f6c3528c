"""Per-site snapshots for following to every DP: one chunked read serves every follower at a site.

    reader = SiteSnapshots(redis, keys, "PS1", client, policy=settings.follow)
    reader.source_version(request, gate, deadline=...)   # phase one: from the "versions" snapshot
    reader.dp_rows(request, gate, max_rows=..., deadline=...)   # phase two: from the "rows" snapshot

A `DistributionReader` (worker/usecase/follow.py) for one site. Each poll registers its package
as followed at the site (a zset per kind, scored by the poll's time). Time is cut into snapshot
intervals of `FOLLOW__SNAPSHOT_S`; the first poll of an interval that finds no snapshot takes the
interval's reading lock and, under one provider slot, reads every package followed at the site:
their SourceVersions from `SMS_PackageBaseclass` (one query per 200 packages), or in phase two
their rollup from `SMS_ObjectContentExtraInfo` (one query per 200 packages) and DP rows from
`SMS_PackageStatusDistPointsSummarizer` (one query per 200 packages, 500 rows a page) only for the
packages whose rollup says a verdict may be near, plus a sample of the others
(worker/domain/follow_triage.py; the others are answered "in flight": no rows this poll). A
follower that knows its V1 registers it (a zset keeping each package's highest): rows are then
read filtered, only those not installed at that version, so a package whose copies all landed
costs no rows; its entry says so (`settled_at`), and a follower waiting for a later version
than the entry's reads its own. Rows read earlier are reused while the package's rollup and
registered V1 stand still (at most
`FOLLOW__ROWS_REFRESH_S`: a package whose copies all landed is read once, not every interval
until its request polls again). Each
chunk is written to the interval's hash as it is read (memory stays one chunk), then the hash is
marked complete. Every other poll of the interval answers from the hash: following 10,000
packages costs the site about one operation per 100 packages per interval, not 10,000 Gets
(bench/follow_bench.py measures it). A request past phase one, or with its final, leaves the
followed set at once (`forget`): it would otherwise be read for another hour.

A poll that finds the interval being read waits for it (at most `FOLLOW__SNAPSHOT_WAIT_S`, holding
no provider slot); if the read is still going then, the poll is skipped (a read of thousands of
packages takes seconds: waiting threads would stall the worker, reading alongside would undo the
batching), and if its reader gave up, the poll reads its own package (worker/usecase/follow.py's
`DirectReader`). A poll whose package is not in the interval's complete snapshot (it was first
polled after the read) is skipped: its package is in the next interval's. A reader that fails
drops its lock, so the next poll of the interval reads again. Packages not polled for
two longest poll intervals drop out of the followed set. Every key expires.

What the hash holds is our own JSON; it is checked again when read (a row that does not rebuild
is left out, as the provider's hostile rows are), never trusted blindly.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Protocol

from redis import Redis

from config.settings import FollowSettings
from errors import InvalidRequestError
from worker.domain.deadline import Deadline
from worker.domain.distribution import (
    DEFAULT_MAX_ROWS,
    MAX_PACKAGES_PER_QUERY,
    ContentCounts,
    DpMessage,
    DpStatusBatch,
    DpStatusRow,
    dp_name_from_nal,
    dp_state,
    package_chunks,
    validate_nal_path,
)
from worker.domain.follow_triage import rollup_key, rows_kept_fresh, rows_needed, sample_every
from worker.domain.request import RefreshRequest
from worker.stores.keys import FollowKeys, RedisKeys
from worker.usecase.attempt import OperationGate
from worker.usecase.follow import DirectReader, FollowClient

__all__ = ["SiteSnapshots", "SnapshotClient"]

log = logging.getLogger(__name__)

_VERSIONS: Final = "versions"
_ROWS: Final = "rows"
_COMPLETE_FIELD: Final = ""  # a package id is never empty
_HIT: Final = "hit"
_SKIP: Final = "skip"
_OWN: Final = "own"
# A read ends by the attempt's soft time limit (TASK_SOFT_TIME_LIMIT_S, 300 s by default).
_READ_BOUND_S: Final = 300.0
_READ_YOUR_OWN: Final = '"read your own"'
_IN_FLIGHT: Final = "in flight"  # a rows entry: the rollup says copies are in flight, no rows read
_IN_FLIGHT_JSON: Final = json.dumps(_IN_FLIGHT)
# A rows entry of a filtered read: {"settled_at": V, "rows": [...]}, rows installed at V or later left out.
_SETTLED_AT: Final = "settled_at"
# A package whose rows this interval reads: its rollup (None: none listed) and the V1 its rows are
# read against (None: its followers have not said, every row is read).
_Pending = tuple[ContentCounts | None, int | None]
_ROWS_FIELD: Final = "rows"
_WAIT_STEP_S: Final = 0.05
_HSET_BATCH: Final = 1000
_MAX_UINT32: Final = 0xFFFFFFFF


class SnapshotClient(FollowClient, Protocol):
    """A `FollowClient` that also reads the per-package rollup (`worker.provider.client.SccmClient` does)."""

    def read_content_counts(
        self, package_ids: Iterable[str], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...

    def read_unsettled_dp_status(
        self, settled_at: Mapping[str, int], *, max_rows: int = ..., deadline: Deadline | None = None
    ) -> DpStatusBatch: ...


class SiteSnapshots:
    """Versions and DP rows of every package followed at one site, read once per snapshot interval."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        site_code: str,
        client: SnapshotClient,
        *,
        policy: FollowSettings,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if policy.snapshot_s <= 0:
            raise ValueError("per-site snapshots need FOLLOW__SNAPSHOT_S > 0")
        self._redis = redis
        self._keys = keys
        self._site = site_code
        self._client = client
        self._direct = DirectReader(client)
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        # Snapshots read by this process, and in phase two the packages whose rows were read or
        # left to the rollup (copies in flight): for tests, logs and bench/follow_bench.py.
        self.snapshot_reads = 0
        self.packages_with_rows = 0
        self.packages_in_flight = 0
        self.packages_rows_kept = 0

    # -- DistributionReader -----------------------------------------------------------------------

    def source_version(self, request: RefreshRequest, gate: OperationGate, *, deadline: Deadline | None) -> int | None:
        answer, value = self._lookup(_VERSIONS, request.package_id, gate, deadline)
        if answer == _SKIP:
            return None
        if answer == _OWN or value is None:  # null: the site did not list it (a Get says why)
            return self._direct.source_version(request, gate, deadline=deadline)
        return value if _is_uint(value) else None

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
        answer, value = self._lookup(_ROWS, request.package_id, gate, deadline, v1=v1)
        if answer == _HIT and value == _IN_FLIGHT and not required:
            return None  # the rollup says copies are in flight: no verdict near, no rows read
        if answer == _SKIP and not required:
            return None
        settled_at = None
        if answer == _HIT and isinstance(value, dict):
            settled_at = _settled_at(value)
            # Rows left out at an older version than ours (or ours unknown) prove nothing.
            if v1 is None or settled_at is None or settled_at < v1:
                return self._direct.dp_rows(request, gate, max_rows=max_rows, deadline=deadline)
            value = value.get(_ROWS_FIELD)
        rows = _rows_from_records(request.package_id, value) if answer == _HIT else None
        if rows is None:
            return self._direct.dp_rows(request, gate, max_rows=max_rows, deadline=deadline)
        return DpStatusBatch(rows=rows[:max_rows], truncated=len(rows) > max_rows, settled_at=settled_at)

    def dp_messages(
        self, request: RefreshRequest, gate: OperationGate, *, max_rows: int, deadline: Deadline | None
    ) -> tuple[DpMessage, ...] | None:
        # Read once per request, for its final: rare enough to stay per request.
        return self._direct.dp_messages(request, gate, max_rows=max_rows, deadline=deadline)

    def forget(self, request: RefreshRequest, *, rows: bool) -> None:
        # A package still registered is read (and its rows too: the rollup says it may be done) at
        # every interval until it goes stale: an hour of reads for a request that has its answer.
        pipe = self._redis.pipeline(transaction=False)
        for kind in (_VERSIONS, _ROWS) if rows else (_VERSIONS,):
            keys = self._keys.follow_keys(self._site, kind, 0)
            pipe.zrem(keys.followed, request.package_id)
            pipe.hdel(keys.kept, request.package_id)
            pipe.zrem(keys.settled, request.package_id)
        pipe.execute()

    # -- the snapshot ---------------------------------------------------------------------------

    def _lookup(
        self, kind: str, package_id: str, gate: OperationGate, deadline: Deadline | None, *, v1: int | None = None
    ) -> tuple[str, Any]:
        """(_HIT, the package's entry) from this interval's snapshot; (_SKIP, None): not in it, skip
        this poll; (_OWN, None): no snapshot to be had, read your own."""
        now = self._clock()
        keys = self._keys.follow_keys(self._site, kind, int(now // self._policy.snapshot_s))
        ttl_s = math.ceil(self._stale_s() + self._policy.snapshot_s)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(keys.followed, {package_id: now})
        pipe.expire(keys.followed, ttl_s)
        if v1 is not None:
            # The highest V1 any follower of the package waits for: rows installed at it are left out.
            pipe.zadd(keys.settled, {package_id: v1}, gt=True)
            pipe.expire(keys.settled, ttl_s)
        pipe.execute()
        entry = self._entry(keys, package_id)
        if entry is not None:
            return entry
        token = uuid.uuid4().hex
        # The lock is the interval's own key: one that outlives a dead reader only holds its interval.
        lease_ms = int((2 * self._policy.snapshot_s + _READ_BOUND_S) * 1000)
        if self._redis.set(keys.reading, token, nx=True, px=lease_ms):
            return self._read_snapshot(kind, keys, package_id, gate, deadline, now=now)
        waited_until = time.monotonic() + self._policy.snapshot_wait_s
        while time.monotonic() < waited_until and (deadline is None or not deadline.expired()):
            self._sleep(_WAIT_STEP_S)
            entry = self._entry(keys, package_id)
            if entry is not None:
                return entry
            if not self._redis.exists(keys.reading):
                return self._entry(keys, package_id) or (_OWN, None)  # its reader gave up: read our own
        # A big read still going: skip this poll rather than hold the thread, or read alongside it.
        return _SKIP, None

    def _entry(self, keys: FollowKeys, package_id: str) -> tuple[str, Any] | None:
        """The package's entry if the snapshot has it; (_SKIP, None) if complete without it; None: not yet."""
        raw, complete = self._redis.hmget(keys.snapshot, [package_id, _COMPLETE_FIELD])
        if raw is not None:
            try:
                return _HIT, json.loads(raw)
            except ValueError:
                return _OWN, None
        return (_SKIP, None) if complete is not None else None

    def _read_snapshot(
        self,
        kind: str,
        keys: FollowKeys,
        package_id: str,
        gate: OperationGate,
        deadline: Deadline | None,
        *,
        now: float,
    ) -> tuple[str, Any]:
        self._redis.zremrangebyscore(keys.followed, "-inf", now - self._stale_s())
        followed = [_text(p) for p in self._redis.zrange(keys.followed, 0, self._policy.snapshot_max_packages - 1)]
        if package_id not in followed:
            followed.append(package_id)
        mine: list[Any] = []

        entries_of = self._row_entries if kind == _ROWS else self._version_entries

        def read() -> bool:
            for entries in entries_of(keys, followed, deadline, now):
                self._store(keys, entries)
                if package_id in entries:
                    mine.append(json.loads(entries[package_id]))
            pipe = self._redis.pipeline()
            pipe.hset(keys.snapshot, _COMPLETE_FIELD, f"{now:.3f}")
            pipe.expire(keys.snapshot, math.ceil(self._policy.snapshot_s * 2))
            pipe.execute()
            return True

        try:
            done = gate.run(read)
        except BaseException:
            self._redis.delete(keys.reading)  # the next poll of the interval reads again
            raise
        if done is None:
            self._redis.delete(keys.reading)
            return _SKIP, None  # no provider slot free now: the next poll
        self.snapshot_reads += 1
        log.info("site %s: %s snapshot of %d followed packages read", self._site, kind, len(followed))
        return (_HIT, mine[0]) if mine else (_OWN, None)

    def _version_entries(
        self, keys: FollowKeys, followed: list[str], deadline: Deadline | None, now: float
    ) -> Iterator[dict[str, str]]:
        """Each chunk of 200 packages as read: package id -> its SourceVersion's JSON (null: not listed)."""
        for chunk in package_chunks(followed):
            batch = self._client.read_source_versions(chunk, deadline=deadline)
            versions: dict[str, str] = dict.fromkeys(chunk, "null")  # asked, not listed: null
            versions.update({v.package_id: str(v.source_version) for v in batch.versions})
            yield versions

    def _row_entries(
        self, keys: FollowKeys, followed: list[str], deadline: Deadline | None, now: float
    ) -> Iterator[dict[str, str]]:
        """The rollup of each chunk of 200, then rows for those it says may be near a verdict (kept
        rows while their rollup stands still), read 200 at a time as they gather
        (worker/domain/follow_triage.py): package id -> its entry's JSON."""
        every = sample_every(self._policy.rows_refresh_s, self._policy.snapshot_s)
        interval = int(now // self._policy.snapshot_s)
        pending: dict[str, _Pending] = {}
        for chunk in package_chunks(followed):
            counts = {c.package_id: c for c in self._client.read_content_counts(chunk, deadline=deadline).counts}
            entries: dict[str, str] = {}
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(keys.kept, chunk)
            pipe.zmscore(keys.settled, chunk)
            kept_raw, settled = pipe.execute()
            for package, raw, score in zip(chunk, kept_raw, settled, strict=True):
                rollup = counts.get(package)
                settled_at = int(score) if score is not None else None
                kept = _kept(raw)
                fresh = (
                    kept is not None
                    and rows_kept_fresh(rollup, kept[0], kept[1], now=now, max_age_s=self._policy.rows_refresh_s)
                    and _settled_at(kept[2]) == settled_at
                )
                if kept is not None and fresh:
                    entries[package] = json.dumps(kept[2], separators=(",", ":"))
                    self.packages_rows_kept += 1
                elif rows_needed(rollup, package_id=package, interval=interval, sample_every=every):
                    pending[package] = (rollup, settled_at)
                else:
                    entries[package] = _IN_FLIGHT_JSON
                    self.packages_in_flight += 1
            yield entries
            while len(pending) >= MAX_PACKAGES_PER_QUERY:
                batch = dict(list(pending.items())[:MAX_PACKAGES_PER_QUERY])
                for package in batch:
                    del pending[package]
                yield self._rows_of(keys, batch, deadline, now)
        if pending:
            yield self._rows_of(keys, pending, deadline, now)

    def _rows_of(
        self, keys: FollowKeys, packages: dict[str, _Pending], deadline: Deadline | None, now: float
    ) -> dict[str, str]:
        self.packages_with_rows += len(packages)
        settled_at = {p: version for p, (_rollup, version) in packages.items() if version is not None}
        unsettled = [p for p in packages if p not in settled_at]
        batches = []
        if settled_at:
            batches.append(
                self._client.read_unsettled_dp_status(settled_at, max_rows=DEFAULT_MAX_ROWS, deadline=deadline)
            )
        if unsettled:
            batches.append(self._client.read_dp_status(unsettled, max_rows=DEFAULT_MAX_ROWS, deadline=deadline))
        if any(batch.truncated for batch in batches):
            # Which packages lost rows is unknown: each reads its own (an entry that is not rows).
            return dict.fromkeys(packages, _READ_YOUR_OWN)
        found: dict[str, list[list[Any]]] = {p: [] for p in packages}
        for batch in batches:
            for row in batch.rows:
                found[row.package_id].append(_record(row))
        records: dict[str, Any] = {
            p: {_SETTLED_AT: settled_at[p], _ROWS_FIELD: rows} if p in settled_at else rows for p, rows in found.items()
        }
        # Kept for later intervals, with the rollup they were read under (none without a rollup).
        kept = {
            p: json.dumps([rollup_key(rollup), round(now, 3), records[p]], separators=(",", ":"))
            for p, (rollup, _version) in packages.items()
            if rollup is not None
        }
        if kept:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(keys.kept, mapping=dict(kept.items()))
            pipe.expire(keys.kept, math.ceil(self._stale_s()))
            pipe.execute()
        return {p: json.dumps(r, separators=(",", ":")) for p, r in records.items()}

    def _store(self, keys: FollowKeys, entries: dict[str, str]) -> None:
        items = list(entries.items())
        pipe = self._redis.pipeline(transaction=False)
        for start in range(0, len(items), _HSET_BATCH):
            pipe.hset(keys.snapshot, mapping=dict(items[start : start + _HSET_BATCH]))
        pipe.expire(keys.snapshot, math.ceil(self._policy.snapshot_s * 2))
        pipe.execute()

    def _stale_s(self) -> float:
        return 2 * self._policy.max_poll_s + self._policy.snapshot_s


def _record(row: DpStatusRow) -> list[Any]:
    return [row.nal_path, row.raw_state, row.source_version, row.site_code, row.last_copied]


def _rows_from_records(package_id: str, value: Any) -> tuple[DpStatusRow, ...] | None:
    """The rows a snapshot holds for a package; None when the entry is not what we write."""
    if not isinstance(value, list):
        return None
    rows = []
    for record in value:
        if not (isinstance(record, list) and len(record) == 5):
            return None
        nal_path, raw_state, version, site_code, last_copied = record
        try:
            validate_nal_path(nal_path)
        except InvalidRequestError:
            return None
        if not (_is_uint(raw_state) and _is_uint(version)):
            return None
        rows.append(
            DpStatusRow(
                package_id=package_id,
                nal_path=nal_path,
                dp_name=dp_name_from_nal(nal_path) or "",
                state=dp_state(raw_state),
                raw_state=raw_state,
                source_version=version,
                site_code=site_code if isinstance(site_code, str) else None,
                last_copied=last_copied if isinstance(last_copied, str) else None,
            )
        )
    return tuple(rows)


def _settled_at(entry: object) -> int | None:
    """The version a filtered entry's rows were read against (None: a full read)."""
    value = entry.get(_SETTLED_AT) if isinstance(entry, dict) else None
    return value if _is_uint(value) else None


def _kept(raw: bytes | str | None) -> tuple[object, object, Any] | None:
    """(rollup, read at, rows) of a kept entry; None when there is none or it is not what we write
    (its rows are checked again when a poll rebuilds them)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], list | dict)):
        return None
    return value[0], value[1], value[2]


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_UINT32


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
