"""SIGTERM during running late-ack refreshes loses none: a warm shutdown, then a new worker finishes the rest.

A real `celery worker` (threads pool) works through a batch while the emulator answers slowly,
so refreshes are mid-flight (inside WS-Man calls) when it gets SIGTERM; two more wait for their
medium (countdown messages held by the worker). Celery's warm shutdown lets the running ones
finish and returns the messages it holds to the queue; a new worker takes them. Every request
ends with exactly one final outcome, read from the outcome stream by request id.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Final

import pytest

from embedded.worker_process import WorkerProcess
from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import Pipeline, PipelineFactory
from testing.waiting import wait_until

pytestmark = pytest.mark.integration

CONCURRENCY: Final = 4
PLAIN_REQUESTS: Final = 12
MEDIUM_REQUESTS: Final = 2
LATENCY_S: Final = 0.8
# Patient medium retries: they must still be waiting when the worker stops.
WORKER_ENV: Final = {
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "200",
    "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "0.5",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "1",
    # The provider slots would otherwise cap BS1 at 3 refreshes at a time, below the pool's 4.
    "SCCM_REFRESH_PROVIDERS__BS1__MAX_CONCURRENCY": str(CONCURRENCY),
}
FINISH_TIMEOUT_S: Final = 90.0


def finals_by_request(pipeline: Pipeline) -> Counter[str]:
    return Counter(o.request_id for o in pipeline.stream_outcomes() if o.final)


def test_sigterm_mid_flight_loses_no_request_and_duplicates_no_outcome(pipeline_factory: PipelineFactory) -> None:
    """Warm shutdown finishes the running refreshes; a new worker ends the rest; one final outcome each."""
    pipeline = pipeline_factory(concurrency=CONCURRENCY, worker_extra_env=WORKER_ENV)
    emulator = pipeline.emulators["BS1"]
    plain = [
        p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] != "SMS_TaskSequencePackage"
    ]
    waiting = [p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 3][:MEDIUM_REQUESTS]
    assert len(waiting) == MEDIUM_REQUESTS
    for package in waiting:
        emulator.provider.set_medium_ready(package["PackageID"], False)
    emulator.faults.set_latency(LATENCY_S)
    first = pipeline.worker
    second: WorkerProcess | None = None
    try:
        ids = [
            pipeline.send({"site_code": "BS1", "package_id": p["PackageID"], "package_class": p["class"]})
            for p in waiting + [plain[i % len(plain)] for i in range(PLAIN_REQUESTS)]
        ]
        assert emulator.wait_in_flight(EMULATOR_USERNAME, CONCURRENCY, timeout_s=20), "refreshes never ran in parallel"
        sigterm_at = time.time()
        assert first.stop(timeout_s=60) == 0, first.output()[-3000:]
        assert "warm shutdown" in first.output().lower()
        done_by_first = finals_by_request(pipeline)
        assert len(done_by_first) < len(ids), "the batch ended before the shutdown: nothing was mid-flight"
        finished_during_shutdown = [
            o for o in pipeline.stream_outcomes() if o.final and o.finished_at.timestamp() >= sigterm_at
        ]
        assert finished_during_shutdown, "no running refresh was allowed to finish"

        second = WorkerProcess(
            first.env, queue=pipeline.queue, concurrency=CONCURRENCY, log_file=first.log_file, name="after-sigterm"
        ).start()
        emulator.faults.set_latency(0)
        for package in waiting:
            emulator.provider.set_medium_ready(package["PackageID"], True)
        assert wait_until(lambda: set(ids) <= set(finals_by_request(pipeline)), timeout_s=FINISH_TIMEOUT_S), sorted(
            set(ids) - set(finals_by_request(pipeline))
        )
    finally:
        emulator.faults.clear()
        if second is not None:
            second.stop()
    finals = finals_by_request(pipeline)
    assert {rid: finals[rid] for rid in ids} == dict.fromkeys(ids, 1)
    statuses = Counter(o.status for o in pipeline.stream_outcomes() if o.final and o.request_id in set(ids))
    assert statuses == Counter({"accepted": len(ids)}), statuses
