"""kombu's Redis transport, taking each message so that no crash can lose it (the worker's broker).

kombu's consumer takes a message with BRPOP and only then records it in its unacked hash
(`QoS.append`). A worker killed between the two (the reply read off the socket, the GIL busy with
a refresh in another thread) loses the message for good: it is in no Redis key any more
(kombu #305). The chaos suite lost one request in five runs of its SIGKILL scenario that way,
and for a first delivery from a plain Celery producer nothing else knew the request existed.

This channel never takes a message out of Redis: it *moves* it, into an in-flight list of its
own, and clears that entry only once kombu has recorded the message as unacked:

- a Lua script (worker/broker_take.lua) moves the first waiting message of any consumed queue,
  in kombu's order, into the in-flight list; when none waits,
- a blocking `BLMOVE` waits on the main refresh queue (`SCCM_REFRESH_QUEUE`) for up to kombu's
  `brpop_timeout` (1 s) and does the same move. Other queues (the worker's direct queue for
  liveness probes) are checked by the script between waits, so they wait at most that second.
- after kombu's delivery (which writes the unacked entry) the entry leaves the in-flight list.

Each script call marks the consumer alive (a key with a TTL) and, at most every few seconds,
puts the in-flight messages of consumers no longer alive back at the head of their queue,
skipping any kombu already holds as unacked (kombu restores those itself). A redelivery that
results is harmless: a request already final is dropped, and the invoke fence and attempt lock
keep a package from being refreshed twice.

Only the consuming side changes: producers (the API, the CLI, any Celery client) publish as
before, and the keys kombu reads and writes are the same. Needs Redis 6.2 (BLMOVE).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from importlib import resources
from queue import Empty
from time import monotonic
from typing import Any, Final

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ResponseError

__all__ = ["TRANSPORT", "Channel", "Transport", "take_script", "transport_options"]

log = logging.getLogger(__name__)

# What `broker_transport` names (worker/app.py): an alias, so logs and Flower read
# "sccm-redis://host:port/db" rather than a class path.
TRANSPORT: Final = "sccm-redis"
TRANSPORT_ALIASES.setdefault(TRANSPORT, f"{__name__}:Transport")

_SCRIPT: Final = "broker_take.lua"
_ALIVE_S: Final = 30
_RECOVERY_INTERVAL_S: Final = 5
_TAKE: Final = "take"
_WAIT: Final = "wait"


@functools.cache
def take_script() -> str:
    """The Lua of one take (worker/broker_take.lua)."""
    return resources.files("worker").joinpath(_SCRIPT).read_text(encoding="utf-8")


def transport_options(*, prefix: str, main_queue: str) -> dict[str, Any]:
    """The broker transport options this channel reads (merged into Celery's)."""
    return {
        "inflight_prefix": f"{prefix}:broker:inflight",
        "inflight_main_queue": main_queue,
        "inflight_alive_s": _ALIVE_S,
        "inflight_recovery_interval_s": _RECOVERY_INTERVAL_S,
    }


class Channel(kombu_redis.Channel):
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
        consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}".replace("|", "_")
        self._inflight_base = f"{self.inflight_prefix}:{consumer}"
        self._registry = f"{self.inflight_prefix}:registry"
        self._recovery_gate = f"{self.inflight_prefix}:recovery-gate"
        self._pending: tuple[str, str] | None = None
        self._next_kind = _TAKE
        self._last_take_mono = float("-inf")
        # kombu's global key prefix rewrites commands in its client; ours are sent by hand, so a
        # prefixed broker keeps kombu's own way of taking messages.
        self._reliable = not self.global_keyprefix

    def _inflight(self, queue_key: str) -> str:
        return f"{self._inflight_base}|{queue_key}"

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
        # A blocking wait follows a take that found nothing, and only while this consumer is
        # known alive (else its in-flight list could be restored under it).
        if self._next_kind == _WAIT and monotonic() - self._last_take_mono < self.inflight_alive_s / 2:
            self._pending = (_WAIT, wait_key)
            command: list[Any] = ["BLMOVE", wait_key, self._inflight(wait_key), "RIGHT", "LEFT", timeout or 0]
        else:
            self._pending = (_TAKE, "")
            self._last_take_mono = monotonic()
            fixed = [self._inflight_base, self._registry, self._recovery_gate, self.unacked_key]
            command = [
                "EVAL",
                take_script(),
                len(fixed) + len(keys),
                *fixed,
                *keys,
                self.inflight_alive_s,
                self.inflight_recovery_interval_s,
                wait_key,
            ]
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]  # kombu declares it None, sets a float
        connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._reliable:
            return bool(super()._brpop_read(**options))
        pending, self._pending = self._pending, None
        kind, wait_key = pending if pending is not None else (_TAKE, "")
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVAL" if kind == _TAKE else "BLMOVE", **options
                )
            except self.connection_errors:
                self._next_kind = _TAKE
                self.client.connection.disconnect()
                raise
            except ResponseError as exc:
                if kind != _WAIT or "unknown command" not in str(exc).lower():
                    raise
                # Redis before 6.2 has no BLMOVE: keep consuming, kombu's way, and say what that costs.
                self._reliable = False
                log.error(
                    "the broker Redis has no BLMOVE (before 6.2): messages are taken with BRPOP, "
                    "and a worker killed while taking one can lose it"
                )
                raise Empty() from None
            if kind == _TAKE:
                queue_key, item, restored = bytes_to_str(reply[0]), reply[1], int(reply[2])
                if restored:
                    log.warning("put %d message(s) of a dead consumer back on their queues", restored)
            else:
                queue_key, item = (wait_key, reply) if reply is not None else ("", b"")
            # Block only after a take found nothing; after a message, look again at once; after a
            # wait that timed out, take (and say alive) before waiting again.
            self._next_kind = _WAIT if kind == _TAKE and not queue_key else _TAKE
            if not queue_key:
                raise Empty()
            self._deliver_taken(queue_key, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # kombu declares it bool, uses None
            self._flush_brpop_reauth()

    def _deliver_taken(self, queue_key: str, item: bytes) -> None:
        queue = queue_key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        try:
            # kombu records the message as unacked before this returns (QoS.append).
            self.connection._deliver(loads(bytes_to_str(item)), queue)
        finally:
            # Cleared on the same idle connection the take used (its reply is consumed); should
            # this fail, the entry stays and comes back only if this consumer dies.
            self.client.lrem(self._inflight(queue_key), 1, item)


class Transport(kombu_redis.Transport):
    Channel = Channel
