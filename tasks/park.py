"""Park a request in its site's line for a provider slot, then ack its message (worker/stores/slots.py).

The message that will bring the request back is made exactly as a re-queue would send it
(Task.retry with no countdown), but captured instead of sent (worker/broker/transport.py) and
stored with the request's place in line, in the same script that puts it there. Where the
broker's queues are in the outcome Redis (the default), the release that wakes the request
pushes that message onto its queue itself, in one atomic step; otherwise the record holds the
request's task id and kwargs and the releasing worker publishes them.

Only after the park is recorded does Celery ack the message (Retry: the task is marked for
retry). A store that cannot be reached puts the message back on its queue instead, as a failed
re-queue does (tasks/requeue.py): it is never acked unrecorded.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NoReturn

from celery.exceptions import Reject, Retry

from worker.broker.transport import captured_publishes
from worker.stores.slots import ProviderSlots, publish_wake, push_wake
from worker.usecase.plan import Park

__all__ = ["park_keeping_message", "wake_message"]

log = logging.getLogger(__name__)


def wake_message(task_id: str, kwargs: dict[str, Any]) -> str:
    """The payload of a publish-kind wake record: what the releasing worker sends."""
    return json.dumps({"task_id": task_id, "kwargs": kwargs}, separators=(",", ":"))


def park_keeping_message(task: Any, park: Park, *, slots: ProviderSlots, push: bool) -> NoReturn:
    """Record the park (with the message that brings the request back), then let Celery ack the message."""
    retry: Retry | None = None
    with captured_publishes() as sent:
        try:
            task.retry(countdown=0, max_retries=None, args=(), kwargs=dict(park.kwargs))
        except Retry as exc:
            retry = exc
        except Reject as exc:
            # Task.retry turns any failure around its publish (here: kombu declaring the queue on a
            # Redis that refuses) into Reject(requeue=False), which would delete the message.
            log.warning("park of %s failed (%s); message put back on its queue", park.holder_id, exc.reason)
            raise Reject("re-queue failed", requeue=True) from None
    if retry is None:  # pragma: no cover - Task.retry always raises
        raise AssertionError("Task.retry returned")
    if push and len(sent) == 1:
        wake = push_wake(*sent[0])
    else:
        wake = publish_wake(wake_message(str(task.request.id), dict(park.kwargs)))
    try:
        slots.park(park.site_code, park.holder_id, park.limit, priority=park.priority, wake=wake)
    except Exception as exc:
        log.warning("park of %s failed (%s); message put back on its queue", park.holder_id, type(exc).__name__)
        raise Reject("re-queue failed", requeue=True) from None
    raise retry
