"""Re-queue a task's message with a countdown (Task.retry), never dropping it when the publish fails.

Celery turns a failed publish of the retry (the broker away, or Redis full: maxmemory under
noeviction) into Reject(requeue=False), which on Redis deletes the message: the task would
vanish. Requeue=True puts it back on its queue instead: at once, or, when Redis is full, once it
has room (worker/broker/transport.py keeps it unacked and held meanwhile).

The new message goes to the head of its queue (worker/broker/transport.py, `published_at_front`):
a request that waited its turn once is not sent behind the backlog that arrived after it, where a
2 s wait for another delivery's lock used to become a wait for the whole backlog.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from celery.exceptions import Reject

from worker.broker.transport import published_at_front

__all__ = ["retry_keeping_message"]

log = logging.getLogger(__name__)


def retry_keeping_message(task: Any, *, countdown_s: float, kwargs: Mapping[str, Any] | None = None) -> NoReturn:
    """`task.retry(countdown=...)` (with new kwargs if given); a refused publish puts the message back."""
    options: dict[str, Any] = {"countdown": max(0.0, countdown_s), "max_retries": None}
    if kwargs is not None:
        options.update(args=(), kwargs=dict(kwargs))
    try:
        with published_at_front():
            task.retry(**options)
    except Reject as exc:
        log.warning("re-queue of %s failed (%s); message put back on its queue", task.request.id, exc.reason)
        raise Reject("re-queue failed", requeue=True) from None
    raise AssertionError("Task.retry returned")  # pragma: no cover - it always raises
