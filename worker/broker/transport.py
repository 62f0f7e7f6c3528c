"""kombu's Redis transport, taking each message so that no crash can lose it (the worker's broker).

kombu's consumer takes a message with BRPOP and only then records it in its unacked hash
(`QoS.append`). A worker killed between the two (the reply read off the socket, the GIL busy with
a refresh in another thread) loses the message for good: it is in no Redis key any more
(kombu #305). The chaos suite lost one request in five runs of its SIGKILL scenario that way,
and for a first delivery from a plain Celery producer nothing else knew the request existed.

This channel never takes a message out of Redis: it *moves* it into an in-flight list of its
own, and the entry leaves that list in the same transaction that writes kombu's unacked record:

- a blocking `BLMOVE` waits on the refresh queue (`SCCM_REFRESH_QUEUE`) for up to kombu's
  `brpop_timeout` (1 s): one round trip per message, as BRPOP was;
- at least once a second, and after a wait that found nothing, a Lua script (`take.lua`)
  instead moves the first waiting message of any consumed queue (kombu's order: priority, then
  queue cycle), so the worker's direct queue (liveness probes) waits at most about a second;
  the same call marks the consumer alive (a key with a TTL) and, at most every few seconds,
  puts the in-flight messages of consumers no longer alive back at the head of their queue,
  skipping any that kombu already holds as unacked (kombu restores those itself);
- `QoS.append` (kombu's unacked record) removes the entry from the in-flight list in its own
  MULTI, so a message is always in exactly one of: the queue, an in-flight list, unacked;
- a consuming channel that closes (a lost broker connection, a shutdown) is remembered by the
  process, and the next take of any channel of it declares that consumer dead and restores its
  lists at once: a message taken just before a Redis restart, whose unacked record never got
  written, is back on its queue as soon as the worker has reconnected, not after the alive TTL.

A Redis that refuses writes (full: maxmemory under noeviction; MISCONF: it cannot persist;
READONLY: a replica, e.g. during a failover; NOREPLICAS: min-replicas-to-write unmet) refuses the
take and the BLMOVE: the consumer pauses (0.5 s doubling to 5 s, waited out on the server with a
blocking XREAD of a key nothing writes), logs that once a minute, and takes again when it can. A
full Redis still takes EXPIRE, with which the heartbeat keeps its alive keys; the others refuse
it too, so alive keys can lapse during a long refusal: when writes come back, the first take or
beat holds the general recovery off for an alive TTL, time for every live process to say it is
alive before anyone is taken for dead. What a refusing Redis does to acks and re-queues is in `QoS`.

Once a consumer has been taken for dead (frozen past its alive TTL, cut off by a broker restart)
and its messages were put back, nothing it does later can run them here or erase them elsewhere:
a delivery is recorded only if its in-flight entry was still there (hold.lua), an ack removes a
record only while this consumer still holds it (ack.lua), and a dead consumer's in-flight list
stays watched for a minute (take.lua), in case a blocking move it sent before lands late.

A redelivery that results from a restore is harmless: a request already final is dropped, and
the invoke fence and attempt lock keep a package from being refreshed twice.

Only the consuming side changes: producers (the API, the CLI, any Celery client) publish as
before, and the keys kombu reads and writes are the same. Needs Redis 6.2 (BLMOVE); on an older
Redis the channel says so once and falls back to kombu's BRPOP.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Iterator
from importlib import resources
from queue import Empty
from time import monotonic, sleep, time
from typing import Any, Final

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import ResponseError

from config.broker import transport_options_problem
from errors import ConfigError
from worker.stores.redis_full import FULL_DETAIL, FullBackoff, refuses_writes, write_refusal

__all__ = [
    "TRANSPORT",
    "Channel",
    "QoS",
    "Transport",
    "ack_script",
    "captured_publishes",
    "hold_script",
    "published_at_front",
    "take_script",
    "transport_options",
]

log = logging.getLogger(__name__)

# What `broker_transport` names (worker/app.py): an alias, so logs and Flower read
# "sccm-redis://host:port/db" rather than a class path.
TRANSPORT: Final = "sccm-redis"
TRANSPORT_ALIASES.setdefault(TRANSPORT, f"{__name__}:Transport")

_SCRIPT: Final = "take.lua"
_HOLD_SCRIPT: Final = "hold.lua"
_ACK_SCRIPT: Final = "ack.lua"
# A consumer counts as dead once its alive key lapses: a heartbeat thread renews it every
# _ALIVE_S / 3 while the process runs (takes renew it too), so only a process that is gone, or frozen
# for longer than this, loses its claim. Its holdings are back on their queues within
# _ALIVE_S + _RECOVERY_INTERVAL_S of its death.
_ALIVE_S: Final = 15
_RECOVERY_INTERVAL_S: Final = 5
_TAKE_EVERY_S: Final = 1.0
_TAKE: Final = "take"
_WAIT: Final = "wait"
_PAUSE: Final = "pause"
# The reply parser each pending command's reply goes through.
_COMMAND_OF: Final = {_TAKE: "EVAL", _WAIT: "BLMOVE", _PAUSE: "XREAD"}
# While Redis refuses writes, the consumer waits out its pause on the server: a blocking XREAD of
# this key (under the in-flight prefix), which nothing ever writes, answers nil after the pause.
# XREAD, not BRPOP: a read, which a read-only replica, MISCONF and NOREPLICAS still serve.
_PAUSE_KEY_SUFFIX: Final = ":pause"


_capture = threading.local()


@contextlib.contextmanager
def captured_publishes() -> Iterator[list[tuple[str, str]]]:
    """Within it, this thread's publishes are not sent: each (queue key, message as kombu stores it) is listed.

    A parked request's message is made this way (Task.retry, exactly as a re-queue would send
    it) and stored with its place in line, for the release that wakes it to push onto its queue.
    """
    sink: list[tuple[str, str]] = []
    previous = getattr(_capture, "sink", None)
    _capture.sink = sink
    try:
        yield sink
    finally:
        _capture.sink = previous


@contextlib.contextmanager
def published_at_front() -> Iterator[None]:
    """Within it, this thread's publishes go to the head of their queue (RPUSH), not its tail.

    For a request's own re-queue (a short wait for another delivery's lock, a medium, the bulk
    pump): it has waited its turn once already, so it goes before the requests that arrived after
    it instead of behind a backlog of thousands. With a countdown it is taken at once and held,
    recorded, until it is due (kombu's ETA), so it blocks nothing behind it.
    """
    previous = getattr(_capture, "front", False)
    _capture.front = True
    try:
        yield
    finally:
        _capture.front = previous


class _RetiredConsumers:
    """In-flight bases and holder ids of this process that are done: closed channels, old connections.

    An in-flight list can only hold messages taken and never delivered (a delivery records the
    unacked message and clears the entry in one script; a closed channel or a dropped connection
    delivers nothing more from it), and a closed channel's holdings are no longer in the worker's
    memory (Celery clears its countdown timers and reserved requests when its connection goes), so
    both are restored as soon as a take can say so, instead of waiting for their alive key to lapse.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bases: set[str] = set()

    def add(self, base: str) -> None:
        with self._lock:
            self._bases.add(base)

    def snapshot(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._bases))

    def forget(self, bases: tuple[str, ...]) -> None:
        with self._lock:
            self._bases.difference_update(bases)


_retired = _RetiredConsumers()


class _Heartbeat:
    """Renews the alive keys of this process's consuming channels on a timer.

    Takes renew them too, but a worker whose threads are all busy takes nothing (prefetch 1), and
    a busy worker is not a dead one: without this, its holdings would be restored and run twice.
    A frozen or killed process renews nothing, which is the point. The same beat puts back the
    re-queues and acks a refusing Redis refused (`QoS.restore_deferred`), once it takes writes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def watch(self, channel: Channel) -> None:
        with self._lock:
            if channel in self._channels:
                return
            self._channels.add(channel)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sccm-broker-heartbeat", daemon=True)
                self._thread.start()

    def forget(self, channel: Channel) -> None:
        with self._lock:
            self._channels.discard(channel)

    def _run(self) -> None:
        while True:
            with self._lock:
                channels = list(self._channels)
            interval_s = min((c.inflight_alive_s for c in channels), default=_ALIVE_S) / 3
            for channel in channels:
                try:
                    channel.renew_alive()
                except Exception as exc:  # Redis away, or the channel closing: the next beat tries again
                    log.debug("broker heartbeat failed: %s", type(exc).__name__)
                try:
                    channel.qos.restore_deferred()
                except Exception as exc:  # Redis still full or away: the next beat tries again
                    log.debug("deferred re-queue failed: %s", type(exc).__name__)
            sleep(max(0.5, interval_s))


_heartbeat = _Heartbeat()


@functools.cache
def take_script() -> str:
    """The Lua of one take (worker/broker/take.lua)."""
    return resources.files("worker.broker").joinpath(_SCRIPT).read_text(encoding="utf-8")


@functools.cache
def hold_script() -> str:
    """The Lua that records a delivered message as held (worker/broker/hold.lua)."""
    return resources.files("worker.broker").joinpath(_HOLD_SCRIPT).read_text(encoding="utf-8")


@functools.cache
def ack_script() -> str:
    """The Lua that removes a delivered message's record while this consumer holds it (worker/broker/ack.lua)."""
    return resources.files("worker.broker").joinpath(_ACK_SCRIPT).read_text(encoding="utf-8")


@functools.cache
def _take_sha() -> str:
    return hashlib.sha1(take_script().encode("utf-8"), usedforsecurity=False).hexdigest()


def transport_options(*, prefix: str, main_queue: str) -> dict[str, Any]:
    """The broker transport options this channel reads (merged into Celery's)."""
    return {
        "inflight_prefix": f"{prefix}:broker:inflight",
        "inflight_main_queue": main_queue,
        "inflight_alive_s": _ALIVE_S,
        "inflight_recovery_interval_s": _RECOVERY_INTERVAL_S,
    }


class QoS(kombu_redis.QoS):
    """kombu's unacked bookkeeping; the record of a message also clears its in-flight entry.

    Each record also lists the delivery tag among its channel's holdings, so that a dead
    consumer's unacked messages (running, prefetched, or held for their countdown) go back to their
    queue within seconds of its death, not at the visibility timeout (which stays as the last net).
    An ack removes the record only while this channel still holds it (ack.lua): once its holdings
    were put back (it was taken for dead), the message may be recorded again, under the same
    delivery tag, for whoever took it next, and a late ack must leave that record alone.

    A Redis that refuses writes (full: maxmemory under noeviction; MISCONF, READONLY, NOREPLICAS)
    refuses kombu's MULTI transactions as a whole, so: acks go out as a script of deletions (which
    a full Redis takes, and which free memory), and an ack the others refuse is done again later;
    a re-queue it refuses (a reject with requeue) leaves the message unacked and held, and is done
    again once Redis takes writes (`restore_deferred`, from the heartbeat thread); the unacked
    sweep skips its turn.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holder_of: dict[str, str] = {}  # delivery tag -> holder id it was recorded under
        self._plain: set[str] = set()  # delivery tags recorded by kombu's own append (no holder)
        self._deferred_lock = threading.Lock()
        self._deferred: set[str] = set()  # delivery tags whose re-queue Redis refused
        self._deferred_acks: dict[str, str | None] = {}  # delivery tag -> holder, for acks Redis refused
        self._deferred_log = FullBackoff("broker acks and re-queues", log)
        self._ack: Any = None  # ack.lua, registered on first use

    def append(self, message: Any, delivery_tag: str) -> None:
        taken = self.channel.claim_taken()
        if taken is None:
            super().append(message, delivery_tag)
            self._plain.add(delivery_tag)
            return
        inflight, item = taken
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        holder = self.channel.holder_id
        keys = [inflight, self.unacked_index_key, self.unacked_key, f"{holder}:held", self.channel.holders_key]
        try:
            recorded = self.channel.run_hold_script(keys, [item, delivery_tag, time(), record, holder])
        except ResponseError as exc:
            detail = write_refusal(exc)
            if detail is None:
                raise
            # A script is refused before its first write: the message is still in its in-flight
            # list, which goes back to its queue at the first take once Redis takes writes.
            self.channel.hold_refused(detail)
            raise Empty() from None
        if not recorded:
            # Its in-flight entry was put back on the queue while this process looked dead (frozen
            # past the alive TTL): another consumer has it now. Not delivered here.
            log.warning("a message taken before this worker stalled was given back meanwhile; not running it")
            raise Empty()
        self._holder_of[delivery_tag] = holder
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        # A tag this channel put back itself (a re-queue, its close) has left `_holder_of`: its
        # holder is still this channel's, whose holdings no longer list it.
        holder = self._holder_of.pop(delivery_tag, None)
        if delivery_tag in self._plain:
            self._plain.discard(delivery_tag)
        elif holder is None:
            holder = self.channel.holder_id
        try:
            self._unrecord(delivery_tag, holder)
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            # Left unacked and held (nothing is lost): the heartbeat acks it once Redis takes writes.
            with self._deferred_lock:
                self._deferred_acks[delivery_tag] = holder
                self._deferred_log.refused(monotonic(), write_refusal(exc) or FULL_DETAIL)
        virtual.QoS.ack(self, delivery_tag)

    def _unrecord(self, delivery_tag: str, holder: str | None) -> None:
        """Remove kombu's record of a delivered message (only while `holder` holds it, when it has one)."""
        with self.channel.conn_or_acquire() as client:
            if holder is None:  # recorded by kombu's own append (a Redis without BLMOVE)
                client.pipeline(transaction=False).zrem(self.unacked_index_key, delivery_tag).hdel(
                    self.unacked_key, delivery_tag
                ).execute()
                return
            if self._ack is None:
                self._ack = client.register_script(ack_script())
            keys = [self.unacked_index_key, self.unacked_key, f"{holder}:held"]
            if not self._ack(keys=keys, args=[delivery_tag], client=client):
                log.info("a message was put back on its queue while this worker looked dead; its late ack is dropped")

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not requeue:
            super().reject(delivery_tag, requeue=False)
            return
        try:
            self.restore_by_tag(delivery_tag, leftmost=True)
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            self._defer(delivery_tag, write_refusal(exc) or FULL_DETAIL)
            return
        self._holder_of.pop(delivery_tag, None)
        virtual.QoS.ack(self, delivery_tag)

    def restore_held(self, delivery_tag: str, holder: str) -> None:
        """Put back on its queue a message `holder` (dead) has recorded as unacked.

        kombu's restore (bindings looked up, redelivered flag set, one transaction, so two restorers
        never both do), which also takes the tag out of the holder's holdings in that transaction:
        a late ack from the holder then finds it gone and leaves the next holder's record alone.
        """
        self._holder_of[delivery_tag] = holder
        try:
            self.restore_by_tag(delivery_tag)
        finally:
            self._holder_of.pop(delivery_tag, None)

    def _defer(self, delivery_tag: str, detail: str) -> None:
        """Redis refuses writes: the message stays unacked and held (nothing is lost), and is put back later.

        It leaves this worker's in-memory count at once, so the deferred re-queues never use up
        the prefetch and stop the consumer.
        """
        with self._deferred_lock:
            self._deferred.add(delivery_tag)
            self._deferred_log.refused(monotonic(), detail)
        virtual.QoS.ack(self, delivery_tag)

    def restore_deferred(self) -> None:
        """Do the re-queues and acks Redis refused (if it takes writes now)."""
        with self._deferred_lock:
            tags = sorted(self._deferred)
            acks = dict(self._deferred_acks)
        for tag in tags:
            try:
                self.restore_by_tag(tag, leftmost=True)
            except ResponseError as exc:
                if refuses_writes(exc):
                    return
                raise
            self._holder_of.pop(tag, None)
            with self._deferred_lock:
                self._deferred.discard(tag)
        for tag, ack_holder in acks.items():
            try:
                self._unrecord(tag, ack_holder)
            except ResponseError as exc:
                if refuses_writes(exc):
                    return
                raise
            with self._deferred_lock:
                self._deferred_acks.pop(tag, None)
        if tags or acks:
            with self._deferred_lock:
                self._deferred_log.accepted(monotonic())
            log.info("put %d re-queued message(s) back on their queues, acked %d", len(tags), len(acks))

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().restore_visible(*args, **kwargs)
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            # The sweep's mutex is a write: Redis refuses it. The next sweep tries again.
            log.debug("unacked sweep skipped: Redis refuses writes")

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        # Looked up, not taken: kombu runs a restore again when its WATCH fails, and the holding
        # must leave in every run. The caller forgets the holder once the restore went through.
        holder = self._holder_of.get(delivery_tag)
        self._plain.discard(delivery_tag)
        if pipe is None:
            # kombu calls it without a pipeline only to ack, which `ack` does; plain deletions anyway.
            with self.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
        removal = super()._remove_from_indices(delivery_tag, pipe)
        return removal if holder is None else removal.srem(f"{holder}:held", delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = (  # type: ignore[assignment]  # the base's tuple, plus ours
        *kombu_redis.Channel.from_transport_options,
        "inflight_prefix",
        "inflight_main_queue",
        "inflight_alive_s",
        "inflight_recovery_interval_s",
    )
    inflight_prefix = "sccm-refresh:broker:inflight"
    inflight_main_queue = ""
    inflight_alive_s = _ALIVE_S
    inflight_recovery_interval_s = _RECOVERY_INTERVAL_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}".replace("|", "_")
        self._inflight_base = self._new_inflight_base()
        # Holdings outlive a reconnect (the worker still has those messages in memory); in-flight
        # lists do not (a reply lost with the connection strands its message): two ids.
        self.holder_id = f"{self.inflight_prefix}:holder:{self._consumer}"
        self.holders_key = f"{self.inflight_prefix}:holders"
        self._connection_seen: int | None = None
        self._connects = 0  # counted by redis-py's connect callback on the consuming connection
        self._connects_seen = 0
        self._heartbeat_client: Any = None
        self._hold: Any = None  # hold.lua, registered on first use
        self._registry = f"{self.inflight_prefix}:registry"
        self._recovery_gate = f"{self.inflight_prefix}:recovery-gate"
        self._pending: tuple[str, str] | None = None
        self._last_take_mono = float("-inf")
        self._wait_found_nothing = False
        self._script_cached = False
        self._taken: tuple[str, bytes] | None = None
        self._took = False  # this channel has sent a take: its in-flight lists may exist
        self._retiring: tuple[str, ...] = ()  # retired bases named in the pending take
        self._pause_key = f"{self.inflight_prefix}{_PAUSE_KEY_SUFFIX}"
        self._full = FullBackoff("broker consumer", log)
        self._renew_refused = False  # the heartbeat's last renewal was refused
        # kombu's global key prefix rewrites commands in its client, not the ones sent here by hand:
        # it would need kombu's own (lossy) way of taking messages. Settings and the worker's start
        # refuse it first (config/broker.py); this is the last guard.
        problem = transport_options_problem({"global_keyprefix": self.global_keyprefix})
        if problem is not None:
            raise ConfigError(problem)
        self._reliable = True  # until a Redis without BLMOVE says otherwise

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        sink = getattr(_capture, "sink", None)
        # A queue with an expiry keeps kombu's own path (it refreshes the expiry with the push).
        at_front = getattr(_capture, "front", False) and not self._expires
        if sink is None and not at_front:
            super()._put(queue, message, **kwargs)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        if sink is not None:
            sink.append((key, dumps(message)))
        else:
            with self.conn_or_acquire() as client:
                client.rpush(key, dumps(message))  # the consumer takes from the right: next in line

    def _new_inflight_base(self) -> str:
        return f"{self.inflight_prefix}:{self._consumer}:{uuid.uuid4().hex[:6]}"

    def _inflight(self, queue_key: str) -> str:
        return f"{self._inflight_base}|{queue_key}"

    def close(self) -> None:
        # First, before kombu's teardown (which can fail with the connection already gone): no I/O.
        _heartbeat.forget(self)
        if self._took:
            _retired.add(self._inflight_base)
            _retired.add(self.holder_id)
        super().close()

    def run_hold_script(self, keys: list[str], args: list[Any]) -> bool:
        """Run hold.lua (EVALSHA, loaded again after a Redis restart): True if recorded."""
        with self.conn_or_acquire() as client:
            if self._hold is None:
                self._hold = client.register_script(hold_script())
            return bool(self._hold(keys=keys, args=args, client=client))

    def renew_alive(self) -> None:
        """Say this channel's consumer and holder are alive (the heartbeat thread's call)."""
        if not self._took:
            return
        if self._heartbeat_client is None:
            # Its own client on kombu's (thread-safe) pool: never the consuming connection.
            self._heartbeat_client = self._create_client(asynchronous=False)
        ttl_s = self.inflight_alive_s
        alive = (f"{self._inflight_base}:alive", f"{self.holder_id}:alive")
        pipe = self._heartbeat_client.pipeline(transaction=False)
        for key in alive:
            pipe.set(key, "1", ex=ttl_s)
        try:
            pipe.execute()
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            self._renew_refused = True
            # A full Redis refuses SET but not EXPIRE: the keys exist (a take wrote them), so a
            # live worker stays alive through it, and its holdings are not handed to another.
            # MISCONF, READONLY and NOREPLICAS refuse EXPIRE too (raised: the next beat tries again).
            pipe = self._heartbeat_client.pipeline(transaction=False)
            for key in alive:
                pipe.expire(key, ttl_s)
            pipe.execute()
            return
        if self._renew_refused:
            # Writes are back. While they were refused no consumer could renew its alive key, so
            # a live one may look dead until its own next beat: hold the general recovery off for
            # an alive TTL, by which time every live process has renewed.
            self._heartbeat_client.set(self._recovery_gate, "1", ex=ttl_s)
            self._renew_refused = False

    def hold_refused(self, detail: str) -> None:
        """Redis refused to record a delivery: pause, and have the next take put the message back.

        The message is still in this channel's in-flight list; retiring the list (as after a lost
        connection) makes the first take that Redis accepts return it to its queue.
        """
        _retired.add(self._inflight_base)
        self._inflight_base = self._new_inflight_base()
        self._full.refused(monotonic(), detail)
        self._wait_found_nothing = True

    def _on_connect(self, connection: Any) -> None:
        self._connects += 1

    def _retire_lost_connection(self, connection: Any) -> None:
        """A new socket under the same channel (redis-py reconnects by itself, e.g. after a health
        check dropped a half-open one): a message moved by a BLMOVE whose reply was lost with the old
        socket sits in the in-flight list. Retire that list (restored at the next take) and go on
        with a new one. Holdings stay: the worker still has those messages.
        """
        if id(connection) != self._connection_seen:
            self._connection_seen = id(connection)
            connection.register_connect_callback(self._on_connect)
        if self._connects != self._connects_seen:
            if self._took:
                _retired.add(self._inflight_base)
                self._inflight_base = self._new_inflight_base()
                log.info("broker connection re-established: the old in-flight list goes back at the next take")
            self._connects_seen = self._connects

    def _restore_holdings(self, holders: list[str]) -> None:
        """Put every message a dead holder still has recorded as unacked back on its queue."""
        restored = 0
        with self.conn_or_acquire() as client:
            for holder in holders:
                held = f"{holder}:held"
                for raw_tag in client.smembers(held):
                    tag = bytes_to_str(raw_tag)
                    if client.hexists(self.unacked_key, tag):
                        self.qos.restore_held(tag, holder)
                        restored += 1
                    else:
                        client.srem(held, tag)  # acked meanwhile, or put back by another restorer
                client.transaction(functools.partial(_forget_if_empty, held, self.holders_key, holder), held)
        if restored:
            log.warning("put %d message(s) held by a dead consumer back on their queues", restored)

    def claim_taken(self) -> tuple[str, bytes] | None:
        """The in-flight entry of the message being delivered, for QoS.append to clear (once)."""
        taken, self._taken = self._taken, None
        return taken

    # -- the consuming side: replaces kombu's BRPOP start/read pair ---------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self._reliable:
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        main = self._q_for_pri(self.inflight_main_queue, 0)
        wait_key = main if main in keys else keys[0]
        connection = self.client.connection
        _heartbeat.watch(self)
        self._retire_lost_connection(connection)
        pause_s = self._full.remaining_s(monotonic())
        if pause_s > 0:
            # Redis is full: wait the pause out on the server, so the event loop stays free and no
            # take is tried (and refused) before it is over.
            self._pending = (_PAUSE, wait_key)
            pause_ms = str(max(1, round(pause_s * 1000)))
            command: list[Any] = ["XREAD", "COUNT", "1", "BLOCK", pause_ms, "STREAMS", self._pause_key, "$"]
        elif self._wait_found_nothing or monotonic() - self._last_take_mono >= _TAKE_EVERY_S:
            self._pending = (_TAKE, wait_key)
            self._last_take_mono = monotonic()
            self._took = True
            self._retiring = tuple(base for base in _retired.snapshot() if base != self._inflight_base)
            fixed = [self._inflight_base, self._registry, self._recovery_gate, self.unacked_key, self.holders_key]
            script = ["EVALSHA", _take_sha()] if self._script_cached else ["EVAL", take_script()]
            command = [
                *script,
                len(fixed) + len(keys),
                *fixed,
                *keys,
                self.inflight_alive_s,
                self.inflight_recovery_interval_s,
                wait_key,
                self.holder_id,
                # Coming out of refused writes: hold the general recovery off (see renew_alive).
                self.inflight_alive_s if self._full.in_episode else 0,
                *self._retiring,
            ]
        else:
            self._pending = (_WAIT, wait_key)
            command = ["BLMOVE", wait_key, self._inflight(wait_key), "RIGHT", "LEFT", timeout or 0]
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]  # kombu declares it None, sets a float
        connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._reliable:
            return bool(super()._brpop_read(**options))
        pending, self._pending = self._pending, None
        kind, wait_key = pending if pending is not None else (_TAKE, "")
        try:
            reply = self._read_reply(kind, **options)
            if kind == _PAUSE:
                raise Empty()  # the pause is over: the next start tries a take
            if kind == _TAKE:
                queue_key, item, restored = bytes_to_str(reply[0]), reply[1], int(reply[2])
                _retired.forget(self._retiring)
                if restored:
                    log.warning("put %d message(s) of a dead consumer back on their queues", restored)
                if len(reply) > 3:
                    try:
                        self._restore_holdings([bytes_to_str(holder) for holder in reply[3:]])
                    except ResponseError as exc:
                        detail = write_refusal(exc)
                        if detail is None:
                            raise
                        # Refused before the restore's MULTI wrote anything: the holders stay
                        # listed, their alive keys gone, and the next recovery pass names them again.
                        self._full.refused(monotonic(), detail)
                self._wait_found_nothing = False
            else:
                queue_key, item = (wait_key, reply) if reply is not None else ("", b"")
                # A wait that timed out: take (and say alive) before waiting again.
                self._wait_found_nothing = not queue_key
            if not queue_key:
                raise Empty()
            self._deliver_taken(queue_key, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu declares it bool, uses None
            self._flush_brpop_reauth()

    def _read_reply(self, kind: str, **options: Any) -> Any:
        try:
            reply = self.client.parse_response(self.client.connection, _COMMAND_OF[kind], **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        except ResponseError as exc:
            detail = write_refusal(exc)
            if detail is not None:
                # Refused before anything moved (a script is refused at its first write). Not an
                # error of this worker: pause, then take (which also says alive) when it is over.
                self._full.refused(monotonic(), detail)
                self._wait_found_nothing = True
                raise Empty() from None
            text = str(exc)
            if text.startswith("UNBLOCKED"):
                # Redis turned replica (a failover) while this wait was blocked: take again, and
                # meet the refusal (READONLY) there.
                self._wait_found_nothing = True
                raise Empty() from None
            if kind == _TAKE and text.startswith("NOSCRIPT"):
                self._script_cached = False  # Redis restarted or flushed its scripts: send it whole
                raise Empty() from None
            if kind == _WAIT and "unknown command" in text.lower():
                # Redis before 6.2 has no BLMOVE: keep consuming, kombu's way, and say what that costs.
                self._reliable = False
                log.error(
                    "the broker Redis has no BLMOVE (before 6.2): messages are taken with BRPOP, "
                    "and a worker killed while taking one can lose it"
                )
                raise Empty() from None
            raise
        if kind == _TAKE or (kind == _WAIT and reply is not None):
            # A take writes first thing, and a move allocates: Redis takes writes (again). A wait that
            # timed out proves nothing: it may have been blocked since before Redis filled up.
            self._full.accepted(monotonic())
        if kind == _TAKE:
            self._script_cached = True
        return reply

    def _receive(self) -> bool:
        """Read the pub/sub connection (Celery's remote control, fanout): a refusal there is not fatal.

        A Redis under MISCONF refuses even PING, and redis-py and kombu check the pub/sub
        connection's health with one: the refusal comes back as that connection's next reply,
        which kombu would raise out of the event loop as an unrecoverable error. It is an answer to
        a probe, not a message: nothing is lost by reading past it.
        """
        try:
            return bool(super()._receive())
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            log.debug("pub/sub health check refused: Redis refuses writes")
            return False

    def maybe_refresh_binding_expiry(self) -> None:
        try:
            super().maybe_refresh_binding_expiry()
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            # kombu logs this with a traceback every few seconds; the consumer already said why.
            log.debug("binding expiry not refreshed: Redis refuses writes")

    def _deliver_taken(self, queue_key: str, item: bytes) -> None:
        queue = queue_key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        self._taken = (self._inflight(queue_key), item)
        try:
            # kombu's consumer records the message as unacked (QoS.append) before this returns,
            # clearing the in-flight entry with it.
            self.connection._deliver(loads(bytes_to_str(item)), queue)
        finally:
            leftover = self.claim_taken()
            if leftover is not None:  # delivered without an unacked record (a no-ack consumer)
                inflight, raw = leftover
                with self.conn_or_acquire() as client:
                    client.lrem(inflight, 1, raw)


def _forget_if_empty(held: str, holders: str, holder: str, pipe: Any) -> None:
    """Drop a holder from the set of holders once it holds nothing (a transaction watching `held`)."""
    if pipe.scard(held) == 0:
        pipe.multi()
        pipe.srem(holders, holder)


class Transport(kombu_redis.Transport):
    Channel = Channel
