"""Naming a message that cannot be trusted, so its answer is still findable.

A rejection is keyed by the offered `request_id` when that obeys the id rule, else by the task id
when that does, else by a digest of the message (`msg-<hex>`); fields that break their rule are
never echoed (docs/outcomes.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from errors import InvalidRequestError
from worker.domain.outcomes import RequestInfo
from worker.domain.packages import validate_package_class, validate_package_id, validate_site_code
from worker.domain.request import is_valid_id
from worker.usecase.ports import Delivery

__all__ = ["message_key", "task_id_for", "trusted_task_id", "untrusted_info"]

_UNKNOWN = "unknown"
_MESSAGE_KEY_PREFIX = "msg-"


def message_key(delivery: Delivery) -> str:
    """A stable name for this exact message: its task id and a digest of its arguments."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(delivery.task_id).encode("utf-8", "backslashreplace"))
    try:
        body = json.dumps([delivery.args, delivery.kwargs], sort_keys=True, ensure_ascii=True, default=repr)
    except (RecursionError, TypeError, ValueError):
        # Too deep to serialise again (kombu decodes up to the recursion limit): its type will do,
        # the task id keeps such messages apart.
        body = f"undigestable:{type(delivery.kwargs).__name__}"
    digest.update(body.encode("ascii"))
    return f"{_MESSAGE_KEY_PREFIX}{digest.hexdigest()}"


def untrusted_info(delivery: Delivery, key: str, now: float) -> RequestInfo:
    """What can be said of a message we refuse: each field only if it obeys its rule."""
    kwargs = delivery.kwargs if isinstance(delivery.kwargs, Mapping) else {}
    task_id = trusted_task_id(delivery.task_id)
    offered = kwargs.get("request_id")
    return RequestInfo(
        request_id=offered if isinstance(offered, str) and is_valid_id(offered) else task_id or key,
        site_code=_valid_or(validate_site_code, kwargs.get("site_code")) or _UNKNOWN,
        package_class=_valid_or(validate_package_class, kwargs.get("package_class")) or _UNKNOWN,
        package_id=_valid_or(validate_package_id, kwargs.get("package_id")) or _UNKNOWN,
        requested_at=datetime.fromtimestamp(now, UTC),
        correlation_id=kwargs.get("correlation_id") if is_valid_id(kwargs.get("correlation_id")) else None,
        task_id=task_id,
    )


def _valid_or(validate: Callable[[object], str], value: object) -> str | None:
    try:
        return validate(value)
    except InvalidRequestError:
        return None


def task_id_for(delivery: Delivery, request_id: str) -> str:
    """The task id to send this request's next message under: the delivery's, when trusted."""
    return trusted_task_id(delivery.task_id) or request_id


def trusted_task_id(task_id: object) -> str | None:
    return task_id if isinstance(task_id, str) and is_valid_id(task_id) else None
