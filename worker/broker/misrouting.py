"""A visible signal when our task messages sit in a queue no sccm-refresh worker consumes.

A producer that sends `sccm.refresh_package` with a plain Celery client and no routing puts it in
Celery's default queue (`celery`), where no worker of ours listens: it would wait there forever
without a word. Every worker checks that queue when it starts and then every few minutes, and
logs a warning naming the count and the fix; `sccm-refresh doctor` and the API's /metrics report
the same number.

The check reads the Redis list behind the queue (kombu's Redis transport keeps one list per
queue, one JSON message per item) and looks at up to `sample` messages: cheap, and never takes
a message.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Final

from redis import Redis
from redis.exceptions import RedisError

__all__ = ["DEFAULT_CELERY_QUEUE", "SAMPLE", "Misrouted", "count_misrouted", "misrouted_in", "start_watch"]

log = logging.getLogger(__name__)

DEFAULT_CELERY_QUEUE: Final = "celery"
OUR_TASK_PREFIX: Final = "sccm."
SAMPLE: Final = 200


@dataclass(frozen=True)
class Misrouted:
    queue: str
    ours: int  # our task messages among the `sampled` first ones
    sampled: int
    length: int  # all messages in the queue

    @property
    def estimated_ours(self) -> int:
        """Our messages in the whole queue, extrapolated from the sample."""
        if self.sampled == 0:
            return 0
        return round(self.ours * self.length / self.sampled)


def count_misrouted(redis: Redis, queue: str = DEFAULT_CELERY_QUEUE, *, sample: int = SAMPLE) -> Misrouted:
    """How many of our task messages wait in `queue` (a queue our workers do not consume)."""
    length = int(redis.llen(queue))
    items = redis.lrange(queue, 0, sample - 1) if length else []
    return misrouted_in(queue, length, items)


def misrouted_in(queue: str, length: int, items: list[Any]) -> Misrouted:
    """The count from a queue's length and its first messages (pure: async readers use it too)."""
    ours = sum(1 for item in items if _task_name(item).startswith(OUR_TASK_PREFIX))
    return Misrouted(queue, ours, len(items), length)


def _task_name(item: Any) -> str:
    try:
        message = json.loads(item)
        name = message.get("headers", {}).get("task", "")
    except (ValueError, AttributeError, TypeError):
        return ""
    return name if isinstance(name, str) else ""


def start_watch(redis: Redis, our_queue: str, *, interval_s: float = 300.0) -> threading.Event:
    """Check now and every `interval_s` in a daemon thread; returns an event that stops it."""
    stop = threading.Event()
    last = {"ours": 0}

    def check() -> None:
        if our_queue == DEFAULT_CELERY_QUEUE:
            return  # our workers consume the default queue themselves
        try:
            found = count_misrouted(redis)
        except RedisError as exc:
            log.debug("misrouting check skipped: %s", type(exc).__name__)
            return
        if found.ours and found.ours != last["ours"]:
            log.warning(
                "%d sccm.* task message(s) wait in Celery's default queue %r, which no sccm-refresh worker "
                "consumes: producers must send them to queue %r (send_task(..., queue=%r), or route 'sccm.*')",
                found.estimated_ours,
                found.queue,
                our_queue,
                our_queue,
            )
        last["ours"] = found.ours

    def loop() -> None:
        check()
        while not stop.wait(interval_s):
            check()

    threading.Thread(target=loop, name="sccm-misrouting-watch", daemon=True).start()
    return stop
