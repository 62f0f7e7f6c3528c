"""Task `sccm.refresh_package`: hand the message to the refresh use case, carry out its plan.

Contract (JSON kwargs only): site_code, package_id, package_class="SMS_DriverPackage",
request_id=None (defaults to the task id), correlation_id=None, force=False, verify=False,
until=None (accepted | source_updated | distributed; verify=true is until=source_updated),
requested_at=None. The worker adds `retry_state` when it re-queues a request; a producer that
sends one gets it validated and, if implausible, ignored.

The use case (worker/usecase/delivery.py) decides; worker/usecase/execute.py publishes and acks, re-queues or
drops. This module only binds them to Celery: the function takes `*args, **kwargs` (not
`self`: a kwarg named `self` must reach validation, not break the call), and its strategy
(tasks/message_guard.py) answers messages Celery could not even hand to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded

from tasks.park import park_keeping_message
from tasks.requeue import retry_keeping_message
from worker.app import REFRESH_TASK, app
from worker.runtime import delivery_deps, provider_slots_of_process, publisher, wakes_pushed_by_redis
from worker.task_states import report_state
from worker.usecase.execute import run_delivery
from worker.usecase.plan import Park
from worker.usecase.ports import Delivery

__all__ = ["refresh_package"]

_CELERY_CONTROL_FLOW = (Retry, Reject, Ignore)


class _KwargsOnlyTask(Task):  # type: ignore[misc]  # Celery ships no type information
    """A task whose call accepts any keyword, `self` included.

    Celery's own `Task.__call__` (and the stack protection it installs) names its first parameter
    `self`, so a message with a kwarg named `self` failed with a TypeError before the task body
    ran, and was acked with no outcome. The worker has pushed the request context already (the
    tracer does it), so calling `run` is all that is left to do.
    """

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)


# Celery ships no type information for its decorators.
@app.task(  # type: ignore[untyped-decorator]
    name=REFRESH_TASK,
    base=_KwargsOnlyTask,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    Strategy="tasks.message_guard:guarded_strategy",
)
def refresh_package(*args: Any, **kwargs: Any) -> dict[str, Any]:
    delivery = Delivery(args=args, kwargs=kwargs, task_id=refresh_package.request.id)
    deps = delivery_deps(interruptions=(SoftTimeLimitExceeded,))
    return run_delivery(
        delivery,
        deps,
        publisher(),
        _requeue,
        control_flow=_CELERY_CONTROL_FLOW,
        report_state=_report_state,
        park=_park,
    )


def _report_state(state: str, detail: str) -> bool:
    # A custom task state Flower shows while the request waits (worker/task_states.py).
    return report_state(refresh_package, state, detail)


def _requeue(kwargs: Mapping[str, Any], countdown_s: float) -> NoReturn:
    """Task.retry with the request's new kwargs; a refused re-queue puts the message back (tasks/requeue.py)."""
    retry_keeping_message(refresh_package, countdown_s=countdown_s, kwargs=kwargs)


def _park(park: Park) -> NoReturn:
    """In the site's line with the message that brings it back, then acked (tasks/park.py)."""
    park_keeping_message(refresh_package, park, slots=provider_slots_of_process(), push=wakes_pushed_by_redis())
