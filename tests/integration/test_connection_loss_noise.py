"""A Redis restart with a threads-pool worker mid-refresh logs a line, not a traceback storm."""

from __future__ import annotations

import pytest

from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import SHORT_VISIBILITY_ENV, PipelineFactory
from testing.waiting import wait_until

pytestmark = pytest.mark.integration

RUNNING = 4


def test_a_redis_restart_during_refreshes_logs_no_traceback_and_no_kwargs(pipeline_factory: PipelineFactory) -> None:
    """Celery's threads pool cannot kill jobs: cancelling them on connection loss only logged tracebacks."""
    pipeline = pipeline_factory(
        worker_extra_env={**SHORT_VISIBILITY_ENV, "SCCM_REFRESH_PROVIDERS__BS1__MAX_CONCURRENCY": str(RUNNING)},
        concurrency=RUNNING,
        emulator_overrides={"BS1": {"latency_s": 1.5}},
    )
    emulator = pipeline.emulators["BS1"]
    packages = [p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2][:RUNNING]
    marker = "noise-marker"
    request_ids = [
        pipeline.send(
            {
                "site_code": "BS1",
                "package_id": p["PackageID"],
                "package_class": p["class"],
                "correlation_id": f"{marker}-{i}",
            }
        )
        for i, p in enumerate(packages)
    ]
    assert emulator.wait_in_flight(EMULATOR_USERNAME, RUNNING, timeout_s=10)

    pipeline.redis_server.stop()
    assert wait_until(lambda: "Cannot connect to sccm-redis://" in pipeline.worker.output(), timeout_s=15)
    pipeline.redis_server.start()

    def finals() -> set[str]:
        return {o.request_id for o in pipeline.stream_outcomes() if o.final}

    assert wait_until(lambda: set(request_ids) <= finals(), timeout_s=45), pipeline.worker.output()[-3000:]
    log = pipeline.worker.output()
    assert "Traceback" not in log and "kill_job" not in log and "Failed to cancel" not in log
    assert log.count("Connection to broker lost") <= 1
    assert marker not in log  # no task kwargs in anything the worker logged
