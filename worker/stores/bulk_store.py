"""The bulk job store: one record per bulk refresh, a paced window of children, exact counts.

A bulk job enumerates packages (pages streamed in with `append_pending`, never all in Python
memory), runs them as children at most `max_outstanding` at a time (`take`), counts each child's
final status once (`child_finished`) and ends exactly once (`last=True` for one caller). States:

    enumerating --enumeration_done--> running --(last child)--> done
         \\________________cancel / fail_______________/  -> cancelled | failed (kept when over)

Crash safety (a worker may die between any two steps, any step may run twice):
* children are identified by a deterministic request id (worker/domain/ids.py:
  `child_request_id`), so a redelivered enumeration page is skipped child by child and a
  redelivered final is counted once;
* a taken child stays in the `taken` hash (the outstanding set) until its final is counted; if
  the worker that took it died before enqueueing it, `stalled_children` returns it once its
  heartbeat is older than `idle_s` (children call `child_heartbeat` on every attempt), to be
  enqueued again: duplicates are harmless for the reasons above;
* cancelling moves nothing out of Redis: `drain_cancelled` moves pending children to `taken` in
  batches, the caller publishes a `cancelled` final for each and counts it with
  `child_finished(..., "cancelled")`, like any child. A drainer that dies leaves them in `taken`,
  where `stalled_children` finds them.

Every operation that touches more than one key is one Lua script (worker/stores/bulk_store.lua). Every
key of a bulk expires `ttl_s` (7 days) after the bulk's last write. Times are epoch seconds from
the Redis server's clock unless the caller passes `now_s`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Final, Literal

from redis import Redis
from redis.exceptions import ResponseError

from config.settings import LimitSettings
from worker.domain.ids import is_bulk_id, is_request_id_key_part
from worker.domain.outcomes import (
    STATUS_DISTRIBUTED,
    STATUS_DISTRIBUTED_WITH_FAILURES,
    STATUS_DISTRIBUTION_TIMED_OUT,
)
from worker.domain.packages import validate_site_code
from worker.domain.request import UNTIL_ACCEPTED, UNTIL_DISTRIBUTED, UNTIL_VALUES
from worker.domain.stragglers import (
    HELD_AT_SOURCE,
    STRAGGLER_STATUSES,
    UNLISTED,
    DpStragglers,
    StragglerMarks,
    encode_marks,
)
from worker.stores.keys import RedisKeys
from worker.stores.lua import epoch_arg, load_script
from worker.usecase.values import BulkNotFoundError, Checkin

__all__ = [
    "BULK_STATES",
    "DEFAULT_BULK_TTL_S",
    "DISTRIBUTION_FINALS",
    "MAX_BATCH",
    "MAX_SPEC_BYTES",
    "MAX_STRAGGLER_DPS",
    "UNTIL_KEY",
    "Appended",
    "BulkNotFoundError",
    "BulkRecord",
    "BulkState",
    "BulkStore",
    "BulkUpdate",
    "Checkin",
    "ChildSpec",
    "Stragglers",
]

BulkState = Literal["enumerating", "running", "done", "cancelled", "failed"]
BULK_STATES: Final[tuple[BulkState, ...]] = ("enumerating", "running", "done", "cancelled", "failed")
DEFAULT_BULK_TTL_S: Final = LimitSettings().final_marker_ttl_s
MAX_BATCH: Final = 1000  # children per script call: bounds one call's time inside Redis
MAX_SPEC_BYTES: Final = 8192
MAX_ERROR_CHARS: Final = 2000
_SCRIPT: Final = "bulk_store.lua"
_COUNT_PREFIX: Final = "count:"
_STATUS_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NO_BULK: Final = "NOBULK"
# Stored with the criteria in the bulk record (as `dry_run` is): how far every child is followed.
UNTIL_KEY: Final = "until"
DISTRIBUTION_FINALS: Final = (STATUS_DISTRIBUTED, STATUS_DISTRIBUTED_WITH_FAILURES, STATUS_DISTRIBUTION_TIMED_OUT)
MAX_STRAGGLER_DPS: Final = 500  # DPs one stragglers read lists at most


@dataclass(frozen=True)
class ChildSpec:
    """One child of a bulk: its request id and what the enumeration found (class, id, name, flags...)."""

    request_id: str
    spec: dict[str, Any]

    def encode(self) -> str:
        if not isinstance(self.request_id, str) or not is_request_id_key_part(self.request_id):
            raise ValueError(f"child request id must be 1-256 characters without whitespace: {self.request_id!r:.60}")
        if not isinstance(self.spec, dict):
            raise ValueError("a child spec must be a dict (a JSON object)")
        try:
            text = json.dumps(self.spec, separators=(",", ":"), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"child spec is not JSON-serialisable: {type(exc).__name__}") from None
        if len(text.encode()) > MAX_SPEC_BYTES:
            raise ValueError(f"child spec exceeds {MAX_SPEC_BYTES} bytes as JSON")
        # Request ids hold no whitespace, so the first space separates id and JSON.
        return f"{self.request_id} {text}"

    @classmethod
    def decode(cls, item: str) -> ChildSpec:
        request_id, _, text = item.partition(" ")
        return cls(request_id, json.loads(text))


@dataclass(frozen=True)
class BulkRecord:
    """A bulk job as stored, typed. `outstanding` children are taken and not yet counted."""

    bulk_id: str
    site_code: str
    state: BulkState
    enumeration_done: bool
    total: int | None
    enqueued: int
    pending: int
    outstanding: int
    counts: dict[str, int] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    criteria: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    dry_run: bool = False
    # A dry run's first matching packages (what a real run would refresh first).
    sample: list[dict[str, Any]] = field(default_factory=list)
    # Children accepted and followed to every DP (until=distributed): out of the window, not finished.
    following: int = 0

    @property
    def finished_children(self) -> int:
        return sum(self.counts.values())

    @property
    def package_classes(self) -> tuple[str, ...]:
        """The classes the bulk enumerates, as its producer recorded them (resolved, defaults included)."""
        classes = self.criteria.get("package_classes")
        return tuple(name for name in classes if isinstance(name, str)) if isinstance(classes, list) else ()

    @property
    def until(self) -> str:
        """How far each child is followed (`until`, as its producer recorded it; `accepted` by default)."""
        value = self.criteria.get(UNTIL_KEY)
        return value if value in UNTIL_VALUES else UNTIL_ACCEPTED

    @property
    def distribution(self) -> dict[str, int] | None:
        """Children by distribution state, for a bulk followed to every DP; None for any other."""
        if self.until != UNTIL_DISTRIBUTED:
            return None
        return {"distributing": self.following} | {status: self.counts.get(status, 0) for status in DISTRIBUTION_FINALS}

    @property
    def over(self) -> bool:
        """Every child is accounted for and the bulk's final outcome is due (or published)."""
        return self.finished_at is not None


@dataclass(frozen=True)
class Stragglers:
    """What `stragglers` read: the top DPs, how many DPs hold anything back, the unnamed rest."""

    dps: tuple[DpStragglers, ...]
    dps_total: int
    held_at_source: int
    unlisted: int


@dataclass(frozen=True)
class BulkUpdate:
    """What a state-changing call did: `applied` (false for a repeat), `last` (this call ended the bulk).

    `taken`: children `child_finished(..., refill=...)` moved to outstanding, for the caller to send.
    """

    applied: bool
    last: bool
    record: BulkRecord
    taken: tuple[ChildSpec, ...] = ()


@dataclass(frozen=True)
class Appended:
    """`added`: new children queued; `accepting`: False once the bulk no longer enumerates (stop)."""

    added: int
    accepting: bool


class BulkStore:
    """Bulk job records, pending and outstanding children in Redis (see the module docstring)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, ttl_s: int = DEFAULT_BULK_TTL_S) -> None:
        if not (60 <= ttl_s <= 90 * 24 * 3600):
            raise ValueError("ttl_s must be between a minute and 90 days")
        self._redis = redis
        self._keys = keys
        self._ttl_s = int(ttl_s)
        self._script = load_script(redis, _SCRIPT)

    def create(
        self, bulk_id: str, site_code: str, criteria: Mapping[str, Any], *, now_s: float | None = None
    ) -> BulkRecord:
        """Create the record (state `enumerating`); an existing record is returned unchanged."""
        site = validate_site_code(site_code)
        try:
            criteria_json = json.dumps(dict(criteria), separators=(",", ":"), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"criteria are not JSON-serialisable: {type(exc).__name__}") from None
        _, _, snapshot = self._run(bulk_id, "create", now_s, bulk_id, site, criteria_json)
        return _record(snapshot)

    def append_pending(self, bulk_id: str, children: Iterable[ChildSpec]) -> Appended:
        """Queue a page of children (any length: sent in batches of MAX_BATCH); repeats are skipped.

        `accepting=False` means the bulk was cancelled or failed (or enumeration already ended):
        the enumerator stops.
        """
        items = iter(children)
        added = 0
        while batch := [child.encode() for child in islice(items, MAX_BATCH)]:
            count, state = self._run(bulk_id, "append", None, *batch)
            added += int(count)
            if state != "enumerating":
                return Appended(added, accepting=False)
        return Appended(added, accepting=True)

    def enumeration_done(self, bulk_id: str, *, now_s: float | None = None) -> BulkUpdate:
        """Enumeration ended: the total is fixed (`running`); `last` if there was nothing left to run."""
        return _update(self._run(bulk_id, "enumeration_done", now_s))

    def take(
        self, bulk_id: str, max_outstanding: int, *, max_count: int = MAX_BATCH, now_s: float | None = None
    ) -> list[ChildSpec]:
        """Pop as many pending children as the window allows and count them outstanding.

        Never more than `max_outstanding` outstanding at once, across concurrent callers; nothing
        once the bulk is cancelled, failed or done.
        """
        _check_count("max_outstanding", max_outstanding, 1_000_000)
        _check_count("max_count", max_count, MAX_BATCH)
        items = self._run(bulk_id, "take", now_s, max_outstanding, max_count)
        return [ChildSpec.decode(str(item)) for item in items]

    def child_finished(
        self,
        bulk_id: str,
        child_request_id: str,
        status: str,
        *,
        refill: int = 0,
        max_count: int = MAX_BATCH,
        marks: StragglerMarks = (),
        now_s: float | None = None,
    ) -> BulkUpdate:
        """Count an outstanding (or followed) child's final status once; `last` for the one call that ends the bulk.

        With `refill` (the window: max outstanding), the call that counts the child also takes
        pending children as `take(bulk_id, refill)` would, atomically: they are in `taken`.
        `marks` (a followed child's final: worker/domain/stragglers.py) replace its last marks in
        the bulk's stragglers rollup, in the same call.
        """
        _check_child(child_request_id)
        if not isinstance(status, str) or not _STATUS_RE.fullmatch(status):
            raise ValueError(f"status must be 1-64 of a-z 0-9 _ starting with a letter, got {str(status)[:40]!r}")
        if refill:
            _check_count("refill", refill, 1_000_000)
        _check_count("max_count", max_count, MAX_BATCH)
        reply = self._run(bulk_id, "finished", now_s, child_request_id, status, refill, max_count, *encode_marks(marks))
        return _taking_update(reply)

    def child_following(
        self,
        bulk_id: str,
        child_request_id: str,
        marks: StragglerMarks,
        *,
        refill: int = 0,
        max_count: int = MAX_BATCH,
        now_s: float | None = None,
    ) -> BulkUpdate:
        """A child was accepted and is followed to every DP (a `distributing` event).

        The first call moves it out of the window (`outstanding`) into `following`, and with
        `refill` takes pending children in its place (`taken`); every call replaces its straggler
        marks. `applied` is False for a child the bulk no longer lists (it ended).
        """
        _check_child(child_request_id)
        if refill:
            _check_count("refill", refill, 1_000_000)
        _check_count("max_count", max_count, MAX_BATCH)
        reply = self._run(bulk_id, "following", now_s, child_request_id, refill, max_count, *encode_marks(marks))
        return _taking_update(reply)

    def stragglers(self, bulk_id: str, *, max_dps: int = 50) -> Stragglers | None:
        """The DPs holding the most of the bulk's packages back (at most `max_dps`), or None (no bulk).

        Bounded whatever the bulk's size: one pipeline of a rank range and one field read per DP
        listed; the rollup itself is kept by the children as they report.
        """
        _check_count("max_dps", max_dps, MAX_STRAGGLER_DPS)
        keys = self._keys.bulk_keys(_checked_bulk_id(bulk_id))
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(keys.record)
            pipe.zrevrange(keys.dp_rank, 0, max_dps - 1, withscores=True)
            pipe.zcard(keys.dp_rank)
            pipe.hmget(keys.dp_stragglers, [HELD_AT_SOURCE, UNLISTED])
            exists, ranked, dps_total, (at_source, unlisted) = pipe.execute()
        if not exists:
            return None
        dps = [_text(dp) for dp, _ in ranked]
        fields = [f"{status}|{dp}" for dp in dps for status in STRAGGLER_STATUSES]
        values = self._redis.hmget(keys.dp_stragglers, fields) if fields else []
        width = len(STRAGGLER_STATUSES)
        rows = tuple(
            DpStragglers(
                dp=dp,
                held=int(score),
                by_status={status: int(values[i * width + j] or 0) for j, status in enumerate(STRAGGLER_STATUSES)},
            )
            for i, (dp, (_, score)) in enumerate(zip(dps, ranked, strict=True))
        )
        return Stragglers(rows, int(dps_total), int(at_source or 0), int(unlisted or 0))

    def child_heartbeat(self, bulk_id: str, child_request_id: str, *, now_s: float | None = None) -> bool:
        """A sign of life from an outstanding child (each attempt); False if it is not outstanding."""
        return self.child_checkin(bulk_id, child_request_id, now_s=now_s).outstanding

    def child_checkin(self, bulk_id: str, child_request_id: str, *, now_s: float | None = None) -> Checkin:
        """`child_heartbeat` and `is_cancelled` in one round trip (what a child does before each attempt)."""
        _check_child(child_request_id)
        outstanding, state = self._run(bulk_id, "heartbeat", now_s, child_request_id)
        return Checkin(outstanding=bool(int(outstanding)), cancelled=state == "cancelled")

    def stalled_children(
        self,
        bulk_id: str,
        *,
        idle_s: float,
        undelivered_s: float | None = None,
        max_count: int = 100,
        now_s: float | None = None,
    ) -> list[ChildSpec]:
        """Outstanding children with no sign of life for `idle_s`, or taken `undelivered_s` ago and
        never delivered: their message was probably lost (or, the second, never published).

        Each returned child's heartbeat is set to now, so concurrent sweepers do not both get it.
        Choose `idle_s` above the longest gap between a child's attempts (the countdown cap plus
        the broker's visibility timeout), and `undelivered_s` above how long a published child waits
        in the queue before its first delivery (a child sent twice is harmless, only wasteful).
        """
        for name, value in (("idle_s", idle_s), ("undelivered_s", undelivered_s)):
            if value is None and name == "undelivered_s":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 90 * 86_400):
                raise ValueError(f"{name} must be in [0, 90 days], got {value!r}")
        _check_count("max_count", max_count, MAX_BATCH)
        extra = () if undelivered_s is None else (f"{undelivered_s:.6f}",)
        items = self._run(bulk_id, "stalled", now_s, f"{idle_s:.6f}", max_count, *extra)
        return [ChildSpec.decode(str(item)) for item in items]

    def cancel(self, bulk_id: str, *, now_s: float | None = None) -> BulkUpdate:
        """Stop the bulk: no more takes or appends; drain the pending children with `drain_cancelled`."""
        return _update(self._run(bulk_id, "stop", now_s, "cancelled", ""))

    def fail(self, bulk_id: str, error: str, *, now_s: float | None = None) -> BulkUpdate:
        """Stop the bulk as `failed` (enumeration could not finish), with a short error text."""
        text = str(error)[:MAX_ERROR_CHARS] or "failed"
        return _update(self._run(bulk_id, "stop", now_s, "failed", text))

    def drain_cancelled(
        self, bulk_id: str, *, max_count: int = MAX_BATCH, now_s: float | None = None
    ) -> list[ChildSpec]:
        """Up to `max_count` pending children of a cancelled or failed bulk, now outstanding.

        Publish a `cancelled` final for each, then `child_finished(..., "cancelled")`. Empty once
        drained (or while the bulk is live).
        """
        _check_count("max_count", max_count, MAX_BATCH)
        items = self._run(bulk_id, "drain", now_s, max_count)
        return [ChildSpec.decode(str(item)) for item in items]

    def iter_drain_cancelled(self, bulk_id: str, *, batch: int = MAX_BATCH) -> Iterator[list[ChildSpec]]:
        """`drain_cancelled` batch after batch until nothing is pending."""
        while children := self.drain_cancelled(bulk_id, max_count=batch):
            yield children

    def dry_run_done(
        self, bulk_id: str, total: int, sample: list[dict[str, Any]], *, now_s: float | None = None
    ) -> BulkUpdate:
        """End a dry run: `done` at once, `total` matching packages, the first ones as `sample`."""
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total must be a non-negative integer, got {total!r}")
        sample_json = json.dumps(sample, separators=(",", ":"), sort_keys=True, allow_nan=False)
        return _update(self._run(bulk_id, "dry_run_done", now_s, total, sample_json))

    def states(self) -> dict[str, int]:
        """How many bulk jobs are in each state (a gauge kept by every state change: O(1))."""
        raw = self._redis.hgetall(self._keys.bulk_states)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    def is_cancelled(self, bulk_id: str) -> bool:
        """Cheap check for a child about to start: True when the bulk was cancelled (it then ends `cancelled`)."""
        return self._redis.hget(self._keys.bulk_keys(_checked_bulk_id(bulk_id)).record, "state") == "cancelled"

    def get(self, bulk_id: str) -> BulkRecord | None:
        """The record with its pending and outstanding counts (read atomically), or None."""
        keys = self._keys.bulk_keys(_checked_bulk_id(bulk_id))
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.record)
            pipe.llen(keys.pending)
            pipe.hlen(keys.taken)
            pipe.hlen(keys.following)
            raw, pending, taken, following = pipe.execute()
        if not raw:
            return None
        return _record([[item for pair in raw.items() for item in pair], pending, taken, following])

    def _run(self, bulk_id: str, op: str, now_s: float | None, *args: str | int) -> Any:
        keys = self._keys.bulk_keys(_checked_bulk_id(bulk_id))
        try:
            return self._script(keys=[*keys, self._keys.bulk_states], args=[op, epoch_arg(now_s), self._ttl_s, *args])
        except ResponseError as exc:
            if str(exc).startswith(_NO_BULK):
                raise BulkNotFoundError(f"no bulk job {bulk_id!r}") from None
            raise


def _checked_bulk_id(bulk_id: str) -> str:
    if not is_bulk_id(bulk_id):
        raise ValueError(f"bulk id must be 'bulk-' and 32 lowercase hex digits, got {str(bulk_id)[:40]!r}")
    return bulk_id


def _check_child(request_id: str) -> None:
    if not isinstance(request_id, str) or not is_request_id_key_part(request_id):
        raise ValueError(f"child request id must be 1-256 characters without whitespace, got {str(request_id)[:40]!r}")


def _check_count(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= maximum):
        raise ValueError(f"{name} must be an integer in [1, {maximum}], got {value!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _taking_update(reply: Any) -> BulkUpdate:
    applied, last, snapshot, items = reply
    return BulkUpdate(
        applied=bool(int(applied)),
        last=bool(int(last)),
        record=_record(snapshot),
        taken=tuple(ChildSpec.decode(str(item)) for item in items),
    )


def _update(reply: Any) -> BulkUpdate:
    applied, last, snapshot = reply
    return BulkUpdate(applied=bool(int(applied)), last=bool(int(last)), record=_record(snapshot))


def _record(snapshot: Any) -> BulkRecord:
    flat, pending, taken, following = snapshot
    data = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
    state = data["state"]
    if state not in BULK_STATES:
        raise ValueError(f"bulk record has an unknown state {state!r}")
    total = data.get("total")
    return BulkRecord(
        bulk_id=data["bulk_id"],
        site_code=data["site_code"],
        state=state,
        enumeration_done=data.get("enumeration_done") == "1",
        total=int(total) if total is not None else None,
        enqueued=int(data.get("enqueued", "0")),
        pending=int(pending),
        outstanding=int(taken),
        counts={
            name[len(_COUNT_PREFIX) :]: int(value) for name, value in data.items() if name.startswith(_COUNT_PREFIX)
        },
        started_at=_time(data.get("started_at")),
        finished_at=_time(data.get("finished_at")),
        criteria=json.loads(data.get("criteria") or "{}"),
        error=data.get("error"),
        dry_run=data.get("dry_run") == "1",
        sample=json.loads(data.get("sample") or "[]"),
        following=int(following),
    )


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), tz=UTC)
