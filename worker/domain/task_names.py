"""The task names producers send and workers register: the message contract's other half.

worker/domain/request.py has the refresh's kwargs; the names live here, apart from the Celery
app, so a producer (producers/, the API, the CLI, any Celery client) needs neither Celery's app
nor the worker to name a task.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BULK_PUMP_TASK", "BULK_TASK", "REFRESH_TASK"]

REFRESH_TASK: Final = "sccm.refresh_package"
BULK_TASK: Final = "sccm.bulk_refresh"  # enumerate a bulk's packages and start feeding its children
BULK_PUMP_TASK: Final = "sccm.bulk_pump"  # a bulk's safety net: refill, re-send, drain, finish
