"""A verifying request gives its provider slot back once its Invoke has answered.

Real Redis, a real worker, the emulator with a DistMgr that takes its time: with a cap of one
slot, a second request must not wait for the first one's verification to end.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest

from testing.fixtures_pipeline import Pipeline, PipelineFactory, RefreshRun

pytestmark = pytest.mark.integration

DISTMGR_S = 2.0


@pytest.fixture(scope="module")
def one_slot(pipeline_factory: PipelineFactory) -> Pipeline:
    return pipeline_factory(
        emulator_overrides={"BS1": {"compress_share": 0.0, "distmgr_time_per_package_s": DISTMGR_S}},
        worker_extra_env={
            "SCCM_REFRESH_PROVIDERS__BS1__MAX_CONCURRENCY": "1",
            "SCCM_REFRESH_LIMITS__VERIFY_POLL_S": "0.2",
            "SCCM_REFRESH_LIMITS__SLOT_WAIT_MIN_S": "0.05",
            "SCCM_REFRESH_LIMITS__SLOT_WAIT_MAX_S": "0.5",
        },
        concurrency=4,
    )


def test_a_second_request_is_refreshed_while_the_first_one_verifies(one_slot: Pipeline) -> None:
    """Both end source_updated, their refreshes accepted well within one DistMgr run; the cap holds."""
    pipeline = one_slot
    emulator = pipeline.emulators["BS1"]
    first = pipeline.package("BS1", pkg_source_flag=2)
    second = pipeline.package("BS1", pkg_source_flag=2, exclude=(first["PackageID"],))
    emulator.concurrency.reset()
    runs: dict[str, RefreshRun] = {}

    def refresh(pkg: dict[str, Any]) -> None:
        kwargs = {"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"], "verify": True}
        runs[pkg["PackageID"]] = pipeline.refresh(**kwargs, timeout_s=30)

    threads = [threading.Thread(target=refresh, args=(pkg,)) for pkg in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    finals = [runs[pkg["PackageID"]].final for pkg in (first, second)]
    assert all(f is not None and f.status == "source_updated" for f in finals), [r.statuses for r in runs.values()]
    ends = sorted(datetime.fromisoformat(str(f.finished_at)) for f in finals if f is not None)
    # With the slot held through verification the second would end a whole DistMgr run later.
    assert (ends[1] - ends[0]).total_seconds() < DISTMGR_S / 2, ends
    assert emulator.concurrency.peak() == 1
