"""The Celery tasks that run a bulk job (the producer side is producers/bulk.py).

Tasks (JSON kwargs, our queue): `sccm.bulk_refresh(bulk_id)` enumerates once (again after a
crash: appends are idempotent), `sccm.bulk_pump(bulk_id)` runs every `bulk_pump_interval_s`
while the bulk lives. The work itself is worker/bulk_job.py's.
"""

from __future__ import annotations

import logging
from typing import Any

from config.settings import Settings, get_settings
from errors import RefreshError
from producers.bulk import get_bulk
from tasks.park import park_keeping_message
from tasks.requeue import retry_keeping_message
from worker.app import BULK_PUMP_TASK, BULK_TASK, app
from worker.domain.deadline import Deadline
from worker.domain.ids import is_bulk_id
from worker.retry import next_delay_s
from worker.runtime import bulk_runner, client_for, provider_slots_of_process, wakes_pushed_by_redis
from worker.usecase.plan import Park
from worker.usecase.values import PRIORITY_BULK, Granted

__all__ = ["bulk_pump", "bulk_refresh"]

log = logging.getLogger(__name__)


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
    slots = provider_slots_of_process()
    limit = settings.provider(record.site_code).max_concurrency if record.site_code in settings.providers else 1
    holder = f"{bulk_id}:enumerate"
    answer = slots.try_acquire(record.site_code, holder, limit, priority=PRIORITY_BULK, join=False)
    if not isinstance(answer, Granted):
        # In the site's line like a refresh: woken (this message sent back) by the release that frees a slot.
        park = Park({"bulk_id": bulk_id}, record.site_code, holder, PRIORITY_BULK, limit)
        park_keeping_message(self, park, slots=slots, push=wakes_pushed_by_redis())
    try:
        # The threads pool enforces no time limit: the enumeration ends by the soft one itself.
        deadline = Deadline.after(settings.task_soft_time_limit_s)
        result = runner.enumerate(bulk_id, client_for(record.site_code), deadline=deadline)
    except RefreshError as exc:
        # Attempts made so far: this one and the re-queues before it (no deadline: elapsed unused).
        delay_s = next_delay_s(settings.retry.enumeration, self.request.retries + 1, 0.0) if exc.retryable else None
        if delay_s is not None:
            log.warning("bulk %s: enumeration failed (%s), retried in %ss", bulk_id, exc.kind, delay_s)
            retry_keeping_message(self, countdown_s=delay_s)
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
        retry_keeping_message(self, countdown_s=get_settings().limits.bulk_pump_interval_s)
    return {"bulk_id": bulk_id, "pumping": False}


def _schedule_pump(bulk_id: str, settings: Settings) -> None:
    app.send_task(
        BULK_PUMP_TASK,
        kwargs={"bulk_id": bulk_id},
        task_id=f"{bulk_id}:pump",
        queue=settings.queue,
        countdown=settings.limits.bulk_pump_interval_s,
    )
