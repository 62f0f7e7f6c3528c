"""Provider slots handed over on release, through a real worker, Redis and emulator.

A burst larger than the cap parks in the site's line and each release wakes the next request:
every request ends with exactly one final, the emulator never sees more operations at once than
the cap, and nothing is woken twice (no lost wake needed re-sending). Run both ways a wake can
travel: pushed onto the queue by the release's own script (broker and outcomes in one Redis, as
shipped), and published by the releasing worker (outcomes in another Redis).
"""

from __future__ import annotations

import time
import uuid

import pytest

from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import Pipeline, PipelineFactory
from worker.stores.redis_client import redis_from_url

pytestmark = pytest.mark.integration

CAP = 2
BURST = 24
_TIMEOUT_S = 90.0


def _burst(pipeline: Pipeline) -> dict[str, int]:
    """Send BURST refreshes of distinct ready packages at once; wait for their finals; the slot stats."""
    emulator = pipeline.emulators["PS1"]
    emulator.concurrency.reset()
    seen: set[str] = set()
    ids = []
    for _ in range(BURST):
        pkg = pipeline.package("PS1", pkg_source_flag=2, exclude=tuple(seen))
        seen.add(pkg["PackageID"])
        ids.append(
            pipeline.send(
                {"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]},
                request_id=f"burst-{uuid.uuid4().hex[:12]}",
            )
        )
    deadline = time.monotonic() + _TIMEOUT_S
    finals = pipeline.finals()
    while time.monotonic() < deadline and not all(rid in finals for rid in ids):
        time.sleep(0.2)  # another process's stream: polled, like a producer would
        finals = pipeline.finals()
    assert {rid: [o.status for o in finals.get(rid, [])] for rid in ids} == {rid: ["accepted"] for rid in ids}
    assert emulator.concurrency.peak(EMULATOR_USERNAME) <= CAP
    client = redis_from_url(pipeline.outcome_redis_url)
    try:
        stats = client.hgetall(pipeline.keys.slot_keys("PS1").stats)
    finally:
        client.close()
    return {field: int(value) for field, value in stats.items() if field in {"parked", "woken", "rewoken"}}


def _pipeline(factory: PipelineFactory, *, separate_outcome_redis: bool) -> Pipeline:
    return factory(
        emulator_overrides={"PS1": {"latency_s": 0.03, "package_count": 200, "compress_share": 0.0}},
        worker_extra_env={"SCCM_REFRESH_PROVIDERS__PS1__MAX_CONCURRENCY": str(CAP)},
        concurrency=6,
        separate_outcome_redis=separate_outcome_redis,
    )


def test_a_burst_parks_and_each_release_wakes_the_next_request_pushed_by_the_script(
    pipeline_factory: PipelineFactory,
) -> None:
    """One Redis for broker and outcomes: the release's script pushes the woken message; no wake is lost."""
    stats = _burst(_pipeline(pipeline_factory, separate_outcome_redis=False))
    assert stats.get("parked", 0) >= BURST // 2 and stats.get("woken", 0) >= BURST // 2
    assert stats.get("rewoken", 0) == 0


def test_a_burst_parks_and_each_release_wakes_the_next_request_published_by_the_worker(
    pipeline_factory: PipelineFactory,
) -> None:
    """Outcomes in another Redis: the releasing worker publishes the woken message; no wake is lost."""
    stats = _burst(_pipeline(pipeline_factory, separate_outcome_redis=True))
    assert stats.get("parked", 0) >= BURST // 2 and stats.get("woken", 0) >= BURST // 2
    assert stats.get("rewoken", 0) == 0
