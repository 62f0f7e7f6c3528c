"""Answer the messages Celery cannot hand to `sccm.refresh_package` at all.

Celery decodes a task message before the task function runs. A body it cannot decode (invalid
JSON, a dict nested deeper than the decoder's recursion limit, a content type we do not accept)
or a body of the wrong shape (not `[args, kwargs, embed]`, kwargs not an object) is logged and
dropped by Celery itself: the producer would never hear of it. This strategy wraps Celery's own:
a message whose headers name our task gets a `rejected` final outcome (keyed as the use case
keys every untrusted message) and is acked; only a message we cannot record an answer for goes
back to the queue.

Wired through the task's `Strategy` attribute (Celery's documented hook for how a task's messages
are received): `@app.task(Strategy="tasks.message_guard:guarded_strategy")`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from celery.worker.strategy import default as default_strategy
from redis.exceptions import RedisError

from errors import InvalidRequestError
from worker.runtime import delivery_deps, publisher
from worker.usecase.delivery import reject_delivery
from worker.usecase.ports import Delivery

__all__ = ["guarded_strategy", "message_problem"]

log = logging.getLogger(__name__)

_PAYLOAD_PARTS = 3  # Celery protocol 2 body: [args, kwargs, embed]


def guarded_strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's default strategy for `task`, answering malformed messages instead of dropping them."""
    inner = default_strategy(task, app, consumer, **options)
    connection_errors = tuple(getattr(consumer, "connection_errors", ()))

    def task_message_handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        problem = message_problem(message)
        if problem is None:
            try:
                return inner(message, body, ack, reject, callbacks, **kw)
            except connection_errors:
                raise
            except Exception as exc:
                problem = f"Celery could not read the message ({type(exc).__name__})"
        _answer(message, problem)
        return None

    return task_message_handler


def message_problem(message: Any) -> str | None:
    """Why this message cannot be a call of our task, or None when its shape is right."""
    try:
        payload = message.decode()
    except Exception as exc:  # kombu raises DecodeError, ContentDisallowed, RecursionError, ...
        return f"message body could not be decoded ({type(exc).__name__})"
    if not isinstance(payload, list | tuple) or len(payload) != _PAYLOAD_PARTS:
        return "message body is not a Celery protocol 2 call [args, kwargs, embed]"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple):
        return "positional arguments are not a JSON array"
    if not isinstance(kwargs, Mapping) or not all(isinstance(name, str) for name in kwargs):
        return "keyword arguments are not a JSON object"
    if embed is not None and not isinstance(embed, Mapping):
        return "the call's options are not a JSON object"
    return None


def _answer(message: Any, problem: str) -> None:
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    task_id = headers.get("id")
    delivery = Delivery(
        args=(), kwargs=_kwargs_if_readable(message), task_id=task_id if isinstance(task_id, str) else None
    )
    plan = reject_delivery(delivery, InvalidRequestError(f"invalid refresh request: {problem}"), delivery_deps())
    try:
        for outcome in plan.outcomes:
            publisher().publish(outcome, message_key=plan.message_key)
    except RedisError as exc:
        log.warning(
            "could not record the rejection of a malformed message (%s); returned to the queue", type(exc).__name__
        )
        message.reject(requeue=True)
        return
    log.warning("malformed message for %s rejected: %s", headers.get("task"), problem)
    message.ack()


def _kwargs_if_readable(message: Any) -> Mapping[str, Any]:
    try:
        payload = message.decode()
    except Exception:
        return {}
    if isinstance(payload, list | tuple) and len(payload) == _PAYLOAD_PARTS and isinstance(payload[1], Mapping):
        return payload[1]
    return {}
