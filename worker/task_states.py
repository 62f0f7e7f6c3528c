"""Custom task states Flower shows, without a result backend: `report_state(task, state, detail)`.

Celery's `task.update_state()` writes to the result backend, and we have none on purpose
(docs/decisions.md). Flower works from task events instead, and Celery's event state machine
turns an unknown task event type `task-<name>` into the custom state `<NAME>`. So a worker
reports "waiting for its medium" by sending the event `task-waiting_for_medium` for the task it
runs, with the detail in the event's `result` field (the Result column of Flower's task list).

Celery's own events that follow would hide such a state at once (the re-queue sends
`task-sent`, `task-received` and `task-retried`). `sccm-refresh flower` keeps a custom state
through those (the request is still waiting for what it said) and replaces it on the next
`task-started`, or when the task ends (ops/flower_app.py: `StickyStatesEventsState`). Call it
just before the re-queue (or while the task holds its slot waiting).

Best effort: an event that cannot be sent is logged and `False` returned; it never fails the task.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from celery import states

# The states sccm-refresh reports are the use case's names (any name of the same form works).
from worker.usecase.values import FOLLOWING_TO_DPS, JOINED, WAITING_FOR_MEDIUM, WAITING_FOR_SLOT

__all__ = [
    "FOLLOWING_TO_DPS",
    "JOINED",
    "MAX_DETAIL_CHARS",
    "WAITING_FOR_MEDIUM",
    "WAITING_FOR_SLOT",
    "is_custom_state",
    "report_state",
    "state_event_type",
]

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS: Final = 300
_STATE_NAME: Final = re.compile(r"^[A-Z][A-Z0-9_]{1,39}$")
# Event subjects Celery maps to its own states (task-sent, task-received, ...).
_CELERY_EVENT_SUBJECTS: Final = frozenset(
    {"sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected"}
)
_WHITESPACE: Final = re.compile(r"\s+")
_CELERY_STATES: Final = states.ALL_STATES | {states.REJECTED, states.IGNORED}


def is_custom_state(state: object) -> bool:
    """True for a state name of ours (or anyone's custom one), False for Celery's and for None."""
    return isinstance(state, str) and bool(_STATE_NAME.fullmatch(state)) and state not in _CELERY_STATES


def state_event_type(state: str) -> str:
    """The task event type that Celery's state machine turns into `state`."""
    if not is_custom_state(state) or state.lower() in _CELERY_EVENT_SUBJECTS:
        raise ValueError(f"not a custom task state name: {state[:40]!r} (A-Z, 0-9, _; not one of Celery's)")
    return f"task-{state.lower()}"


def report_state(task: Any, state: str, detail: str) -> bool:
    """Send the custom state `state` (e.g. WAITING_FOR_MEDIUM) with a one-line `detail` for the task `task` runs.

    `task` is the bound Celery task (inside its run, `task.request` is the current message).
    Returns whether the event went out. A bad state name is a programming error (ValueError).
    """
    event_type = state_event_type(state)
    request = getattr(task, "request", None)
    if request is None or not getattr(request, "id", None):
        log.debug("report_state(%s) outside a running task: nothing to report", state)
        return False
    text = _WHITESPACE.sub(" ", str(detail)).strip()[:MAX_DETAIL_CHARS]
    try:
        # No publish retries: a monitoring event must never hold a worker slot through a broker blip.
        task.send_event(event_type, retry=False, result=text)
    except Exception as exc:  # kombu/redis raise many types; none may fail the task
        log.warning("task state %s for %s not sent (%s)", state, request.id, type(exc).__name__)
        return False
    return True
