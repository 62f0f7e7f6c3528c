"""Bulk refresh: the producer helpers and the Celery tasks that run a bulk job.

Producers (the CLI, the HTTP API, Python callers) never talk to WinRM: they validate the criteria,
create the bulk's record in Redis and send `sccm.bulk_refresh`; a worker enumerates the packages
and feeds the children, paced by the site's provider slots (worker/bulk_job.py).

    submission = enqueue_bulk(app, {"site_code": "PS1", "name_pattern": "Dell *"})
    record = get_bulk(settings, submission.bulk_id)      # state, total, counts by status
    cancel_bulk(settings, submission.bulk_id)            # children not yet attempted end `cancelled`

Tasks (JSON kwargs, our queue): `sccm.bulk_refresh(bulk_id)` enumerates once (again after a
crash: appends are idempotent), `sccm.bulk_pump(bulk_id)` runs every `bulk_pump_interval_s`
while the bulk lives.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery

from config.settings import Settings, get_settings
from errors import InvalidRequestError, RefreshError
from worker.app import BULK_PUMP_TASK, BULK_TASK, app
from worker.bulk_job import DRY_RUN_KEY
from worker.bulk_store import BulkNotFoundError, BulkRecord, BulkStore
from worker.constants import BULK_ID_PREFIX, RedisKeys, is_bulk_id
from worker.criteria import BulkCriteria, parse_criteria
from worker.redis_client import redis_from_url
from worker.runtime import bulk_runner, client_for, provider_slots
from worker.slots import PRIORITY_BULK, Granted

__all__ = ["BulkSubmission", "bulk_pump", "bulk_refresh", "cancel_bulk", "enqueue_bulk", "get_bulk", "new_bulk_id"]

log = logging.getLogger(__name__)

# Enumeration failing with a transient error is tried again this many times, this far apart.
_ENUMERATION_RETRIES = 10
_ENUMERATION_RETRY_S = 30.0


@dataclass(frozen=True)
class BulkSubmission:
    bulk_id: str
    dry_run: bool
    # The classes the bulk enumerates (the default set when the criteria named none).
    package_classes: tuple[str, ...]


def new_bulk_id() -> str:
    """A fresh bulk id: "bulk-" and a UUID4's 32 lowercase hex digits (the only shape `is_bulk_id` takes)."""
    return f"{BULK_ID_PREFIX}{uuid.uuid4().hex}"


def enqueue_bulk(
    app: Celery,
    criteria: Mapping[str, Any] | BulkCriteria,
    *,
    dry_run: bool = False,
    bulk_id: str | None = None,
    queue: str | None = None,
    settings: Settings | None = None,
) -> BulkSubmission:
    """Validate the criteria (InvalidRequestError naming each bad field), record the bulk, start it."""
    settings = settings or get_settings()
    checked = criteria if isinstance(criteria, BulkCriteria) else parse_criteria(criteria)
    if not isinstance(dry_run, bool):
        raise InvalidRequestError("invalid bulk request: dry_run: Input should be a valid boolean")
    if settings.providers:
        settings.provider(checked.site_code)  # an unknown site is refused before anything is recorded
    bulk_id = bulk_id or new_bulk_id()
    if not is_bulk_id(bulk_id):
        raise InvalidRequestError("invalid bulk request: bulk_id: must be 'bulk-' and 32 lowercase hex digits")
    # The classes are recorded resolved: the worker enumerates what this producer announced,
    # whatever default the worker's version has.
    classes = list(checked.classes)
    stored = {**checked.model_dump(mode="json"), "package_classes": classes, DRY_RUN_KEY: dry_run}
    _store(settings).create(bulk_id, checked.site_code, stored)
    app.send_task(BULK_TASK, kwargs={"bulk_id": bulk_id}, task_id=f"{bulk_id}:enumerate", queue=queue or settings.queue)
    return BulkSubmission(bulk_id, dry_run, tuple(classes))


def get_bulk(settings: Settings, bulk_id: str) -> BulkRecord | None:
    """The bulk's record (state, total, counts by status), or None if unknown or expired."""
    if not is_bulk_id(bulk_id):
        return None
    return _store(settings).get(bulk_id)


def cancel_bulk(settings: Settings, bulk_id: str, *, app: Celery | None = None) -> BulkRecord | None:
    """Stop the bulk: children not yet attempted end `cancelled`; running ones finish."""
    if not is_bulk_id(bulk_id):
        return None
    store = _store(settings)
    try:
        update = store.cancel(bulk_id)
    except BulkNotFoundError:
        return None
    if update.applied:
        # The pump drains the pending children (a `cancelled` outcome each) and ends the bulk.
        (app or _default_app()).send_task(BULK_PUMP_TASK, kwargs={"bulk_id": bulk_id}, queue=settings.queue)
    return store.get(bulk_id)


@lru_cache(maxsize=4)
def _store_for(redis_url: str, prefix: str, ttl_s: int) -> BulkStore:
    return BulkStore(redis_from_url(redis_url), RedisKeys(prefix), ttl_s=ttl_s)


def _store(settings: Settings) -> BulkStore:
    return _store_for(settings.redis_url, settings.key_prefix, settings.limits.final_marker_ttl_s)


def _default_app() -> Celery:
    return app


# -- tasks --------------------------------------------------------------------------------------


# Celery ships no type information for its decorators.
@app.task(  # type: ignore[untyped-decorator]
    bind=True, name=BULK_TASK, max_retries=None, acks_late=True, reject_on_worker_lost=True
)
def bulk_refresh(self: Any, bulk_id: object = None, **unexpected: Any) -> dict[str, Any]:
    """Enumerate the bulk's packages (holding a provider slot), then start feeding its children."""
    if not isinstance(bulk_id, str) or not is_bulk_id(bulk_id) or unexpected:
        log.warning("sccm.bulk_refresh with invalid arguments dropped (bulk_id must name a bulk job)")
        return {"bulk_id": None, "error": "invalid arguments"}
    runner = bulk_runner()
    settings = get_settings()
    record = get_bulk(settings, bulk_id)
    if record is None:
        log.warning("bulk %s: no such bulk job (expired?); enumeration dropped", bulk_id)
        return {"bulk_id": bulk_id, "error": "unknown bulk"}
    slots = provider_slots(settings)
    limit = settings.provider(record.site_code).max_concurrency if record.site_code in settings.providers else 1
    answer = slots.try_acquire(record.site_code, f"{bulk_id}:enumerate", limit, priority=PRIORITY_BULK)
    if not isinstance(answer, Granted):
        raise self.retry(countdown=answer.retry_after_s, max_retries=None)
    try:
        result = runner.enumerate(bulk_id, client_for(record.site_code))
    except RefreshError as exc:
        if exc.retryable and self.request.retries < _ENUMERATION_RETRIES:
            log.warning("bulk %s: enumeration failed (%s), retried in %ss", bulk_id, exc.kind, _ENUMERATION_RETRY_S)
            raise self.retry(countdown=_ENUMERATION_RETRY_S, max_retries=None) from None
        log.warning("bulk %s: enumeration failed for good (%s)", bulk_id, exc.kind)
        return {"bulk_id": bulk_id, "state": runner.fail(bulk_id, exc).state}
    finally:
        slots.release(answer.lease)
    if result.record.finished_at is None:
        _schedule_pump(bulk_id, settings)
    return {"bulk_id": bulk_id, "state": result.record.state, "selected": result.enumerated}


@app.task(  # type: ignore[untyped-decorator]
    bind=True, name=BULK_PUMP_TASK, max_retries=None, acks_late=True, reject_on_worker_lost=True
)
def bulk_pump(self: Any, bulk_id: object = None, **unexpected: Any) -> dict[str, Any]:
    """One round of a bulk's safety net; re-queued while the bulk lives."""
    if not isinstance(bulk_id, str) or not is_bulk_id(bulk_id) or unexpected:
        log.warning("sccm.bulk_pump with invalid arguments dropped")
        return {"bulk_id": None, "error": "invalid arguments"}
    if bulk_runner().pump(bulk_id):
        raise self.retry(countdown=get_settings().limits.bulk_pump_interval_s, max_retries=None)
    return {"bulk_id": bulk_id, "pumping": False}


def _schedule_pump(bulk_id: str, settings: Settings) -> None:
    app.send_task(
        BULK_PUMP_TASK,
        kwargs={"bulk_id": bulk_id},
        task_id=f"{bulk_id}:pump",
        queue=settings.queue,
        countdown=settings.limits.bulk_pump_interval_s,
    )
