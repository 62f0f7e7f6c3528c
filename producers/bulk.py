"""The bulk producer: validate a bulk's criteria, record it, start it; read it; cancel it.

Producers (the CLI, the HTTP API, Python callers) never talk to WinRM: they validate the criteria,
create the bulk's record in Redis and send `sccm.bulk_refresh`; a worker enumerates the packages
and feeds the children, paced by the site's provider slots (worker/bulk_job.py, tasks/bulk.py).

    submission = enqueue_bulk(app, {"site_code": "PS1", "name_pattern": "Dell *"})
    record = get_bulk(settings, submission.bulk_id)      # state, total, counts by status
    get_stragglers(settings, submission.bulk_id)         # until=distributed: the DPs holding it back
    cancel_bulk(settings, submission.bulk_id)            # children not yet attempted end `cancelled`
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from config.settings import Settings, get_settings
from errors import InvalidRequestError
from worker.bulk_job import DRY_RUN_KEY
from worker.domain.criteria import BulkCriteria, parse_criteria
from worker.domain.ids import BULK_ID_PREFIX, is_bulk_id
from worker.domain.request import UNTIL_ACCEPTED, UNTIL_VALUES
from worker.domain.stragglers import stragglers_report
from worker.domain.task_names import BULK_PUMP_TASK, BULK_TASK
from worker.stores.bulk_store import UNTIL_KEY, BulkNotFoundError, BulkRecord, BulkStore
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

if TYPE_CHECKING:  # the caller's app does the sending: importing Celery's app is theirs to pay
    from celery import Celery

__all__ = ["BulkSubmission", "cancel_bulk", "enqueue_bulk", "get_bulk", "get_stragglers", "new_bulk_id"]


@dataclass(frozen=True)
class BulkSubmission:
    bulk_id: str
    dry_run: bool
    # The classes the bulk enumerates (the default set when the criteria named none).
    package_classes: tuple[str, ...]
    until: str = UNTIL_ACCEPTED


def new_bulk_id() -> str:
    """A fresh bulk id: "bulk-" and a UUID4's 32 lowercase hex digits (the only shape `is_bulk_id` takes)."""
    return f"{BULK_ID_PREFIX}{uuid.uuid4().hex}"


def enqueue_bulk(
    app: Celery,
    criteria: Mapping[str, Any] | BulkCriteria,
    *,
    dry_run: bool = False,
    until: str = UNTIL_ACCEPTED,
    bulk_id: str | None = None,
    queue: str | None = None,
    settings: Settings | None = None,
) -> BulkSubmission:
    """Validate the criteria (InvalidRequestError naming each bad field), record the bulk, start it.

    `until` is how far every child is followed (a single request's `until`, the same values).
    """
    settings = settings or get_settings()
    checked = criteria if isinstance(criteria, BulkCriteria) else parse_criteria(criteria)
    if not isinstance(dry_run, bool):
        raise InvalidRequestError("invalid bulk request: dry_run: Input should be a valid boolean")
    if until not in UNTIL_VALUES:
        raise InvalidRequestError(f"invalid bulk request: until: must be one of {', '.join(UNTIL_VALUES)}")
    if settings.providers:
        settings.provider(checked.site_code)  # an unknown site is refused before anything is recorded
    bulk_id = bulk_id or new_bulk_id()
    if not is_bulk_id(bulk_id):
        raise InvalidRequestError("invalid bulk request: bulk_id: must be 'bulk-' and 32 lowercase hex digits")
    # The classes are recorded resolved: the worker enumerates what this producer announced,
    # whatever default the worker's version has.
    classes = list(checked.classes)
    stored = {**checked.model_dump(mode="json"), "package_classes": classes, DRY_RUN_KEY: dry_run}
    if until != UNTIL_ACCEPTED:
        # Left out by default: a worker that predates `until` refuses a bulk that asks for more
        # (an unknown criteria field) instead of running it without following.
        stored[UNTIL_KEY] = until
    _store(settings).create(bulk_id, checked.site_code, stored)
    app.send_task(BULK_TASK, kwargs={"bulk_id": bulk_id}, task_id=f"{bulk_id}:enumerate", queue=queue or settings.queue)
    return BulkSubmission(bulk_id, dry_run, tuple(classes), until)


def get_bulk(settings: Settings, bulk_id: str) -> BulkRecord | None:
    """The bulk's record (state, total, counts by status), or None if unknown or expired."""
    if not is_bulk_id(bulk_id):
        return None
    return _store(settings).get(bulk_id)


def get_stragglers(settings: Settings, bulk_id: str, *, max_dps: int = 50) -> dict[str, Any] | None:
    """The stragglers report (worker/domain/stragglers.py): the DPs holding most of the bulk's packages
    back, at most `max_dps` of them; None if the bulk is unknown or expired."""
    if not is_bulk_id(bulk_id):
        return None
    store = _store(settings)
    rollup = store.stragglers(bulk_id, max_dps=max_dps)
    record = store.get(bulk_id)
    if rollup is None or record is None:
        return None
    return stragglers_report(
        bulk_id=record.bulk_id,
        state=record.state,
        until=record.until,
        following=record.following,
        dps=rollup.dps,
        dps_total=rollup.dps_total,
        held_at_source=rollup.held_at_source,
        unlisted=rollup.unlisted,
    )


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
    # Only a cancel that names no app sends with the worker's: importing it here keeps Celery's
    # app out of every producer that does not.
    from worker.app import app  # noqa: PLC0415

    return app
