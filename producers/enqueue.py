"""The Python producer: validate at the edge, then send the task by name.

Producers never import the worker's code paths that talk to WinRM, nor the worker's Celery app:
they only need the task name and the JSON kwargs contract (worker/domain/), which non-Python
producers speak too, and the caller's Celery app to send with.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worker.domain.request import RefreshRequest, parse_request
from worker.domain.task_names import REFRESH_TASK

if TYPE_CHECKING:  # the caller's app does the sending: importing Celery's app is theirs to pay
    from celery import Celery
    from celery.result import AsyncResult

__all__ = ["enqueue_refresh", "new_request_id", "prepare_refresh", "send_refresh", "stamp_refresh"]


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def prepare_refresh(**kwargs: Any) -> RefreshRequest:
    """Validate one request (raises InvalidRequestError); stamp its request id and requested_at."""
    return stamp_refresh(parse_request(kwargs))


def stamp_refresh(request: RefreshRequest, *, default_id: str | None = None) -> RefreshRequest:
    """A validated request with a request id (its own, else `default_id`, else a new one) and requested_at.

    For producers that validated with `RefreshRequest` already (the HTTP API's body model):
    validating twice was a tenth of a submit's time.
    """
    stamps: dict[str, Any] = {}
    if request.request_id is None:
        stamps["request_id"] = default_id or new_request_id()
    if request.requested_at is None:
        stamps["requested_at"] = datetime.now(UTC)
    return request.model_copy(update=stamps) if stamps else request


def send_refresh(app: Celery, request: RefreshRequest, *, queue: str | None = None) -> AsyncResult:
    """Send a prepared request (`prepare_refresh`, `stamp_refresh`); the task id is its request id."""
    assert request.request_id is not None
    options: dict[str, Any] = {"task_id": request.request_id}
    if queue is not None:
        options["queue"] = queue
    return app.send_task(REFRESH_TASK, kwargs=request.model_dump(mode="json"), **options)


def enqueue_refresh(app: Celery, *, queue: str | None = None, **kwargs: Any) -> tuple[RefreshRequest, AsyncResult]:
    """Validate one request (raises InvalidRequestError), give it a request id, enqueue it.

    The task id is the request id, so a producer can look the task up in Flower by the id it
    already holds.
    """
    request = prepare_refresh(**kwargs)
    return request, send_refresh(app, request, queue=queue)
