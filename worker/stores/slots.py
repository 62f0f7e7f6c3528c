"""A per-SMS-Provider concurrency cap across every worker: leases and a fair waiting line.

At most `limit` holders per site at any time (the provider's `max_concurrency`). A holder gets a
lease that expires after `lease_s` unless renewed (asking again while holding renews it too), so a
SIGKILLed worker's slot frees itself; given a `LeaseKeeper`, the worker renews the leases it holds
while its attempts run, so `lease_s` can be short.

A request that finds no free slot waits in the site's line, ordered by priority (`PRIORITY_*`: a
verifying request's follow-up Get, then single requests, then bulk children), then by arrival; a
slot goes to the best waiters, never to a newcomer that is further back. It waits in one of two
ways:

- Parked (`park`): its message is stored with its place in line (a wake record) and the worker
  acks it; no thread is held and nothing polls. The release that frees a slot grants it to the
  head of the line and, in the same script, pushes the head's message back onto its queue (at the
  end consumers take from next), or, when the broker is not this Redis, returns it for the
  releasing worker to publish. The woken request's next delivery finds its slot held for it and
  claims it. A wake whose message never comes back (lost, or the worker that took it died) lapses
  with its lease and the request is woken again, by the next operation on the site or by the
  sweep every worker runs on a timer (`sweep`): a crash loses nothing.
- Woken ahead: that delivery (a broker hop, the request watch, the coalescing claim) would leave
  the freed slot idle while it runs. So every hand-off also sends back the messages of the next
  parked waiters, up to half the limit (`woken_ahead`), before any slot is theirs; each such
  delivery waits for its slot in its thread (`await_woken_slot`, a few seconds at most) and gets
  it from the release at once. One that waits in vain parks its message again and is woken with
  its slot next time, not ahead again. A message woken ahead that is lost is woken again once the
  slot it was granted lapses, like any wake.
- Polling (`try_acquire(join=True)`): it keeps its place by asking again before `waiter_ttl_s`
  has passed, and drops out after that time if it stops. A verifying request's follow-up Get (it
  holds its thread anyway) and the lanes wait so; a polling head keeps a free slot until its
  next look.

A site may also have lanes: a cap of their own, taken on top of the site's (boot images refresh
one at a time: worker/usecase/delivery.py takes the lane's one slot, then a site slot). A lane is named
by a key part (the class name) and has its own keys, line and statistics.

For polling waiters, `Wait.retry_after_s` says when to poll next: the caller's distance from a slot times how often a
slot frees up (the site's average hold time, an EWMA kept in Redis and updated on release,
divided by the limit), clamped to the constructor's bounds: a waiting request re-polls a handful
of times, not once per second.

Every operation is one Lua script (worker/stores/slots.lua). Times are epoch seconds: by default
the Redis server's clock (`TIME`, one clock for all machines); tests pass `now_s` to drive time.

The layout (the keys of worker/stores/keys.py `slot_keys`, what their members and scores mean)
is known here and in the script only: /metrics reads a site's occupancy through
`queue_occupancy_reads` and `occupancy_from`, on its own pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis import Redis

from worker.domain.ids import is_request_id_key_part
from worker.domain.packages import validate_site_code
from worker.stores.keys import SLOT_PARKED, RedisKeys, SlotKeys
from worker.stores.lease_keeper import Held, LeaseKeeper
from worker.stores.lua import epoch_arg, load_script
from worker.usecase.values import (
    PRIORITY_BULK,
    PRIORITY_FOLLOW_UP,
    PRIORITY_SINGLE,
    AcquireResult,
    Granted,
    Lease,
    Parked,
    SweepResult,
    Wait,
)

__all__ = [
    "MAX_LIMIT",
    "MAX_PRIORITY",
    "OCCUPANCY_READS",
    "PRIORITY_BULK",
    "PRIORITY_FOLLOW_UP",
    "PRIORITY_SINGLE",
    "SCRIPT_NAME",
    "AcquireResult",
    "Granted",
    "Lease",
    "Parked",
    "ProviderSlots",
    "ScriptCall",
    "SlotOccupancy",
    "SweepResult",
    "Wait",
    "estimate_retry_after_s",
    "occupancy_from",
    "park_many_call",
    "parked_requests",
    "publish_wake",
    "push_wake",
    "queue_occupancy_reads",
    "wake_payload",
]

log = logging.getLogger(__name__)

MAX_PRIORITY: Final = 9
MAX_LIMIT: Final = 256  # config.settings.ProviderSettings.max_concurrency's bound
_SCRIPT: Final = "slots.lua"
# Keys outlive their newest lease or waiter deadline by this much, so a key never vanishes
# under a live member because of rounding.
_KEY_TTL_MARGIN_MS: Final = 60_000
DEFAULT_STATS_TTL_S: Final = 30 * 24 * 3600
_LONGEST_BLOCK_S: Final = 4.0


@dataclass(frozen=True)
class SlotOccupancy:
    """One site's live leases and live waiters (what /metrics shows)."""

    in_use: int
    waiting: int


def estimate_retry_after_s(
    *,
    rank: int,
    in_use: int,
    limit: int,
    hold_s: float,
    min_s: float,
    max_s: float,
    release_gap_s: float | None = None,
) -> float:
    """When a waiter at `rank` should poll again: slot releases it needs times the time between releases.

    With `limit` slots busy and each held `hold_s` on average, a slot frees every `hold_s / limit`;
    when releases were seen to come further apart while requests waited (`release_gap_s`: workers
    busy, polls late), that slower pace counts. The waiter needs enough releases that the free
    slots outnumber the waiters ahead of it.
    """
    free = limit - in_use
    releases_needed = max(1, rank - free + 1)
    interval_s = hold_s / max(limit, 1)
    if release_gap_s is not None:
        interval_s = max(interval_s, release_gap_s)
    return min(max_s, max(min_s, releases_needed * interval_s))


class ProviderSlots:
    """The concurrency cap of every site, in Redis (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        lease_s: float,
        waiter_ttl_s: float,
        min_retry_after_s: float = 2.0,
        max_retry_after_s: float = 60.0,
        default_hold_s: float = 30.0,
        ewma_alpha: float = 0.2,
        stats_ttl_s: int = DEFAULT_STATS_TTL_S,
        keeper: LeaseKeeper | None = None,
        publish_wake: Callable[[str], None] | None = None,
    ) -> None:
        if not (0 < lease_s <= 86_400):
            raise ValueError("lease_s must be in (0, 86400]")
        if not (0 < min_retry_after_s <= max_retry_after_s):
            raise ValueError("retry-after bounds must satisfy 0 < min <= max")
        # A waiter told to come back later than its place is kept would lose its place; twice the
        # longest retry leaves room for a late Celery countdown.
        if waiter_ttl_s < 2 * max_retry_after_s:
            raise ValueError("waiter_ttl_s must be at least twice max_retry_after_s")
        if not (0 < ewma_alpha <= 1) or default_hold_s <= 0 or stats_ttl_s < 1:
            raise ValueError("ewma_alpha must be in (0, 1], default_hold_s and stats_ttl_s positive")
        self._redis = redis
        self._keys = keys
        self._lease_s = float(lease_s)
        self._waiter_ttl_s = float(waiter_ttl_s)
        self._min_retry_after_s = float(min_retry_after_s)
        self._max_retry_after_s = float(max_retry_after_s)
        self._default_hold_s = float(default_hold_s)
        self._ewma_alpha = float(ewma_alpha)
        self._stats_ttl_ms = int(stats_ttl_s) * 1000
        self._script = load_script(redis, _SCRIPT)
        self._keeper = keeper
        self._kept: dict[tuple[str, str, str], Held] = {}  # (site, holder, token) -> its renewal
        self._kept_lock = threading.Lock()
        self._publish_wake = publish_wake

    @property
    def lease_s(self) -> float:
        return self._lease_s

    def try_acquire(
        self,
        site_code: str,
        holder_id: str,
        limit: int,
        *,
        priority: int,
        lane: str | None = None,
        join: bool = True,
        now_s: float | None = None,
    ) -> AcquireResult:
        """A slot for `holder_id` (of the site, or of one of its lanes), or where it would stand in line.

        With `join` the caller waits in line polling: it calls again after `retry_after_s` and keeps
        its place for `waiter_ttl_s` after each call. Without, it is not put in line: one that must
        wait parks (`park`). Idempotent: asking again while holding renews and returns the same
        lease (and claims the slot a wake-up granted).
        """
        site = validate_site_code(site_code)
        _check_holder(holder_id)
        _check_limit(limit)
        _check_priority(priority)
        reply = self._run(
            site,
            lane,
            "acquire",
            now_s,
            holder_id,
            limit,
            priority,
            f"{self._waiter_ttl_s:.6f}",
            uuid.uuid4().hex,
            1 if join else 0,
        )
        if reply[0] == "granted":
            _, token, acquired, expires = reply
            lease = Lease(site, holder_id, str(token), float(acquired), float(expires), lane)
            self._keep(lease)
            return Granted(lease)
        _, rank, in_use, waiting, ewma, gap = reply
        hold_s = float(ewma) if ewma else self._default_hold_s
        retry_after_s = estimate_retry_after_s(
            rank=int(rank),
            in_use=int(in_use),
            limit=limit,
            hold_s=hold_s,
            release_gap_s=float(gap) if gap else None,
            min_s=self._min_retry_after_s,
            max_s=self._max_retry_after_s,
        )
        return Wait(rank=int(rank), in_use=int(in_use), waiting=int(waiting), retry_after_s=retry_after_s)

    def park(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, wake: str, now_s: float | None = None
    ) -> Parked:
        """Put `holder_id` in the site's line with `wake`, the record that brings its message back.

        `wake` is `push_wake` (the broker is this Redis: the release pushes the message itself) or
        `publish_wake` (the store's `publish_wake` callable sends it). Once this returns, the
        caller's message may be acked: the record is the request now. When a slot frees, the
        release grants it to the head of the line and sends the head's message back, in one step.
        """
        site = validate_site_code(site_code)
        _check_holder(holder_id)
        _check_limit(limit)
        _check_priority(priority)
        if not isinstance(wake, str) or not wake:
            raise ValueError("wake must be a non-empty wake record")
        return self._park(site, holder_id, limit, priority=priority, wake=wake, signal="", now_s=now_s)

    def _park(
        self, site: str, holder_id: str, limit: int, *, priority: int, wake: str, signal: str, now_s: float | None
    ) -> Parked:
        status, rank, in_use, waiting = self._run(site, None, "park", now_s, holder_id, limit, priority, wake, signal)
        return Parked(woken=status == "woken", rank=int(rank), in_use=int(in_use), waiting=int(waiting))

    def await_slot(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None:
        """A slot for a caller that holds its thread anyway (a verifying request's Get): it waits in line,
        blocked on a key of its own that the release handing it the slot writes to, for at most
        `timeout_s` (then it leaves the line, or gives back a slot granted too late: None).

        Unlike a polling waiter, it never keeps a free slot idle: the hand-off wakes it at once.
        """
        site = validate_site_code(site_code)
        answer = self.try_acquire(site, holder_id, limit, priority=priority, join=False)
        if isinstance(answer, Granted):
            return answer
        granted = self._wait_signalled(site, holder_id, limit, priority=priority, timeout_s=timeout_s)
        if granted is None:
            self.leave(site, holder_id)
        return granted

    def await_woken_slot(
        self, site_code: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None:
        """A parked request woken ahead of its slot (slots.lua `wake_ahead`) waits for it in its
        thread, in its place in line, blocked on its own key that the hand-off writes to: the slot
        goes to work the moment it frees. None after `timeout_s` (at most a few seconds): the
        caller parks its message again, keeping its place (and the park sends the message at once
        if the slot came in between)."""
        site = validate_site_code(site_code)
        return self._wait_signalled(site, holder_id, limit, priority=priority, timeout_s=timeout_s)

    def _wait_signalled(
        self, site: str, holder_id: str, limit: int, *, priority: int, timeout_s: float
    ) -> Granted | None:
        """In line with a record naming a key of its own, blocked on that key until the hand-off
        writes the lease there (or `timeout_s`, at most a few seconds, passes: None)."""
        signal = self._keys.slot_signal(site, holder_id)
        record = json.dumps({"signal": signal}, separators=(",", ":"))
        parked = self._park(site, holder_id, limit, priority=priority, wake=record, signal=signal, now_s=None)
        if not parked.woken:
            # Within the client's socket timeout (worker/stores/redis_client.py): a longer wait is the caller's loop.
            woken = self._redis.blpop([signal], timeout=max(0.01, min(timeout_s, _LONGEST_BLOCK_S)))
            if woken is None:
                return None
            lease = _signalled_lease(site, holder_id, woken[1])
            if lease is not None:
                # The hand-off granted it and wrote its lease here: no round trip to claim it.
                self._keep(lease)
                return Granted(lease)
        answer = self.try_acquire(site, holder_id, limit, priority=priority, join=False)
        return answer if isinstance(answer, Granted) else None

    def _keep(self, lease: Lease) -> None:
        """With a keeper, renew the lease while it is held, so it can be short (a dead holder's lapses soon)."""
        if self._keeper is None:
            return
        key = (lease.site_code, lease.holder_id, lease.token)
        with self._kept_lock:
            if key in self._kept:
                return
            self._kept[key] = self._keeper.keep(
                f"provider slot of {lease.holder_id} at {lease.site_code}" + (f" ({lease.lane})" if lease.lane else ""),
                lambda: self.renew(lease) is not None,
                lease_s=self._lease_s,
            )

    def _unkeep(self, site_code: str, holder_id: str, token: str | None) -> None:
        with self._kept_lock:
            keys = [k for k in self._kept if k[0] == site_code and k[1] == holder_id and token in (None, k[2])]
            kept = [self._kept.pop(k) for k in keys]
        if self._keeper is not None:
            for held in kept:
                self._keeper.drop(held)

    def release(self, lease: Lease, *, now_s: float | None = None) -> bool:
        """Give the slot back (to the head of the line, woken now); False if already released or reclaimed."""
        self._unkeep(lease.site_code, lease.holder_id, lease.token)
        reply = self._run(
            lease.site_code,
            lease.lane,
            "release",
            now_s,
            lease.holder_id,
            lease.token,
            self._ewma_alpha,
            f"{self._max_retry_after_s:.6f}",
        )
        return bool(int(reply[0]))

    def leave(self, site_code: str, holder_id: str, *, now_s: float | None = None) -> bool:
        """Whatever `holder_id` holds or waits for at the site goes (a woken request that ended early)."""
        site = validate_site_code(site_code)
        _check_holder(holder_id)
        self._unkeep(site, holder_id, None)
        return bool(int(self._run(site, None, "leave", now_s, holder_id)[0]))

    def renew(self, lease: Lease, *, now_s: float | None = None) -> Lease | None:
        """The lease extended by `lease_s` from now, or None if it was lost (reclaimed or released)."""
        reply = self._run(lease.site_code, lease.lane, "renew", now_s, lease.holder_id, lease.token)
        if not int(reply[0]):
            return None
        return Lease(lease.site_code, lease.holder_id, lease.token, lease.acquired_at_s, float(reply[1]), lease.lane)

    def abandon(self, site_code: str, holder_id: str) -> bool:
        """Leave the waiting line now (a polling waiter that gives up); False if it was not waiting."""
        _check_holder(holder_id)
        return bool(int(self._run(validate_site_code(site_code), None, "abandon", None, holder_id)[0]))

    def sweep(self, site_code: str, limit: int, *, now_s: float | None = None) -> SweepResult:
        """What a release does, for slots freed by lapsed leases and wakes whose message never came back."""
        site = validate_site_code(site_code)
        _check_limit(limit)
        in_use, waiting, parked = self._run(site, None, "sweep", now_s, limit)
        return SweepResult(in_use=int(in_use), waiting=int(waiting), parked=int(parked))

    def _run(self, site: str, lane: str | None, op: str, now_s: float | None, *args: str | int | float) -> Any:
        slot_keys: SlotKeys = self._keys.slot_keys(site, lane=lane)
        to_publish, *reply = self._script(
            keys=list(slot_keys),
            args=[op, epoch_arg(now_s), f"{self._lease_s:.6f}", _KEY_TTL_MARGIN_MS, self._stats_ttl_ms, *args],
        )
        for record in to_publish:
            self._send(record)
        return reply

    def _send(self, record: bytes | str) -> None:
        text = record.decode() if isinstance(record, bytes) else record
        if self._publish_wake is None:
            # Unsent, the wake is sent again when its lease lapses (a store with a publisher sweeps).
            log.error("a parked request was woken, but this store has no publisher for its message")
            return
        try:
            self._publish_wake(text)
        except Exception as exc:  # its lease lapses unclaimed and the sweep wakes it again
            log.warning("sending a woken request's message failed (%s); it is woken again later", type(exc).__name__)


def _signalled_lease(site: str, holder_id: str, payload: bytes | str) -> Lease | None:
    """The lease a hand-off pushed to a blocked waiter's key ("<token> <acquired> <expires>"), or None."""
    parts = (payload.decode() if isinstance(payload, bytes) else str(payload)).split()
    if len(parts) != 3:
        return None
    try:
        return Lease(site, holder_id, parts[0], float(parts[1]), float(parts[2]), None)
    except ValueError:
        return None


@dataclass(frozen=True)
class ScriptCall:
    """One call of the slots script, for a client that runs it itself (the API's asyncio pipeline)."""

    keys: list[str]
    args: list[str | int | float]


def park_many_call(
    keys: RedisKeys,
    site_code: str,
    limit: int,
    *,
    priority: int,
    wakes: Sequence[tuple[str, str]],
    lease_s: float,
    stats_ttl_s: int = DEFAULT_STATS_TTL_S,
) -> ScriptCall:
    """Park many requests (holder id, push-kind wake record) in a site's line in one call (`script_source`)."""
    site = validate_site_code(site_code)
    _check_limit(limit)
    _check_priority(priority)
    args: list[str | int | float] = ["park_many", "", f"{lease_s:.6f}", _KEY_TTL_MARGIN_MS, stats_ttl_s * 1000]
    args += [limit, priority]
    for holder_id, wake in wakes:
        _check_holder(holder_id)
        args += [holder_id, wake]
    return ScriptCall(list(keys.slot_keys(site)), args)


SCRIPT_NAME: Final = _SCRIPT


def push_wake(queue_key: str, message: str) -> str:
    """A wake record the script carries out itself: RPUSH `message` onto `queue_key` in this Redis."""
    return json.dumps({"queue": queue_key, "message": message}, separators=(",", ":"))


def publish_wake(payload: str) -> str:
    """A wake record handed to the store's `publish_wake` callable (another broker, or another Redis)."""
    return json.dumps({"publish": payload}, separators=(",", ":"))


def wake_payload(record: str) -> str | None:
    """The payload of a `publish_wake` record, or None if it is not one."""
    try:
        decoded = json.loads(record)
    except ValueError:
        return None
    payload = decoded.get("publish") if isinstance(decoded, dict) else None
    return payload if isinstance(payload, str) else None


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not (1 <= limit <= MAX_LIMIT):
        raise ValueError(f"limit must be an integer in [1, {MAX_LIMIT}], got {limit!r}")


def _check_priority(priority: int) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int) or not (0 <= priority <= MAX_PRIORITY):
        raise ValueError(f"priority must be an integer in [0, {MAX_PRIORITY}], got {priority!r}")


def _check_holder(holder_id: str) -> None:
    # Holder ids are set members next to a space-separated lease value: no whitespace.
    if not isinstance(holder_id, str) or not is_request_id_key_part(holder_id):
        raise ValueError(f"holder_id must be 1-256 characters without whitespace, got {str(holder_id)[:40]!r}")


# -- reading the layout from outside (the API's /metrics) -----------------------------------------


class _CountingPipeline(Protocol):
    """A redis-py pipeline, sync or asyncio: only queuing a ZCOUNT is needed."""

    def zcount(self, name: str, low: float | str, high: float | str, /) -> Any: ...


OCCUPANCY_READS: Final = 2  # replies `queue_occupancy_reads` adds to a pipeline's results


def queue_occupancy_reads(pipe: _CountingPipeline, keys: RedisKeys, site_code: str, *, now_s: float) -> None:
    """Queue on the caller's pipeline the reads of one site's occupancy (its next OCCUPANCY_READS replies).

    Live means not yet expired at `now_s`: a dead holder's lease or a waiter that stopped polling
    still sits in its set until the next acquire reclaims it, and is not counted.
    """
    slot = keys.slot_keys(site_code)
    pipe.zcount(slot.holders, f"({now_s}", "+inf")
    pipe.zcount(slot.waiter_deadlines, f"({now_s}", "+inf")


def occupancy_from(replies: Sequence[Any]) -> SlotOccupancy:
    """The occupancy read by `queue_occupancy_reads`, from its OCCUPANCY_READS replies."""
    in_use, waiting = replies
    return SlotOccupancy(in_use=int(in_use), waiting=int(waiting))


def parked_requests(client: Redis, keys: RedisKeys) -> int:
    """Requests parked (or woken and not yet claimed) at every site and lane: messages kept by the slots.

    A broker with nothing queued, in flight or unacked is not idle while any are (the chaos suite's
    drain). A SCAN: for observers, not for a hot path.
    """
    pattern = SLOT_PARKED.format(prefix=keys.prefix, site_code="*")
    return sum(int(client.hlen(key)) for key in client.scan_iter(match=pattern, count=1000))
