"""The refresh use case: what to do with one delivery of `sccm.refresh_package`, and doing it.

    plan = handle_delivery(delivery, deps)                         # delivery.py: the steps
    summary = run_delivery(delivery, deps, outcomes, requeue)      # execute.py: carry a plan out

Pure: no Celery, kombu, Redis, pywinrm or requests is imported here or below (an import-linter
contract and tests/unit/test_usecase_purity.py keep it so). The stores (worker/stores/), the
provider client (worker/provider/) and the Celery task (tasks/refresh.py) come in through the
ports of ports.py, built once per worker process by worker/runtime.py.

    delivery.py   the steps, in order (admit ... attempt, decide)
    attempt.py    one attempt: Get, fence, Invoke, verify
    decide.py     after a failed attempt: retry (when) or fail
    plan.py       the answer: outcomes to publish, then Done, Requeue or Drop
    execute.py    carrying a plan out: publish, then ack, re-queue or drop
    ports.py      what comes in (Delivery) and the collaborators (DeliveryDeps, protocols)
    values.py     the value types shared with the stores (leases, claims, fence snapshots)
    untrusted.py  naming a message that cannot be trusted
"""

from worker.usecase.attempt import AttemptResult, RefreshClient, attempt_refresh
from worker.usecase.decide import Decision, decide_after_error, wake_early
from worker.usecase.delivery import STEPS, handle_delivery, internal_failure_plan, reject_delivery
from worker.usecase.execute import OutcomeSink, Requeuer, StateReporter, run_delivery
from worker.usecase.plan import Done, Drop, Plan, Requeue
from worker.usecase.ports import Delivery, DeliveryDeps, SystemClock

__all__ = [
    "STEPS",
    "AttemptResult",
    "Decision",
    "Delivery",
    "DeliveryDeps",
    "Done",
    "Drop",
    "OutcomeSink",
    "Plan",
    "RefreshClient",
    "Requeue",
    "Requeuer",
    "StateReporter",
    "SystemClock",
    "attempt_refresh",
    "decide_after_error",
    "handle_delivery",
    "internal_failure_plan",
    "reject_delivery",
    "run_delivery",
    "wake_early",
]
