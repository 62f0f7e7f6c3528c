"""A tiny task for tests of `report_state` (load it into a test worker with `--include testing.state_report_task`).

Run 1 reports the custom state, waits for the test to push its gate, and re-queues itself (as a
refresh waiting for its medium does); run 2 waits for the gate again, then succeeds. Waiting on a
Redis list lets the test look at Flower at each step.
"""

from __future__ import annotations

from typing import Any, Final

from worker.app import app
from worker.runtime import publisher
from worker.task_states import report_state

__all__ = ["STATE_REPORT_TASK", "state_report_task"]

STATE_REPORT_TASK: Final = "sccm.test.report_state"
GATE_TIMEOUT_S: Final = 30
_BLPOP_S: Final = 1  # below the client's socket timeout
RETRY_COUNTDOWN_S: Final = 3


@app.task(name=STATE_REPORT_TASK, bind=True, max_retries=1, acks_late=True)  # type: ignore[untyped-decorator]  # Celery ships no types
def state_report_task(self: Any, *, state: str, detail: str, gate: str) -> str:
    if self.request.retries == 0:
        report_state(self, state, detail)
        _wait_for(gate)
        raise self.retry(countdown=RETRY_COUNTDOWN_S)
    _wait_for(gate)
    return "done"


def _wait_for(gate: str) -> None:
    client = publisher().redis
    for _ in range(GATE_TIMEOUT_S // _BLPOP_S):
        if client.blpop([gate], timeout=_BLPOP_S) is not None:
            return
    raise TimeoutError(f"nobody opened gate {gate}")
