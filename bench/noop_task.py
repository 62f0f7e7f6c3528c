"""A Celery task that does nothing, on the project's own app and settings: the benchmarks' floor.

`python -m bench.bulk_bench` starts a worker with `--include bench.noop_task` (the repository
root on PYTHONPATH: bench/ is not installed) and compares the worker's CPU per bulk refresh with
its CPU per no-op, same Redis, same Celery settings (`worker.app.celery_config`), same run.
"""

from __future__ import annotations

from typing import Final

from worker.app import app

__all__ = ["NOOP_TASK", "noop"]

NOOP_TASK: Final = "bench.noop"


# Celery ships no type information for its decorators.
@app.task(name=NOOP_TASK)  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing: what remains is Celery's own cost of one task (receive, run, ack, events)."""
