"""A worker SIGKILLed while a request is followed to every DP: another worker ends it, exactly once."""

from __future__ import annotations

import threading

import pytest

from testing.fixtures_pipeline import SHORT_VISIBILITY_ENV, Pipeline, PipelineFactory
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

_FOLLOW_ENV = {
    "SCCM_REFRESH_FOLLOW__FIRST_POLL_S": "0.5",
    "SCCM_REFRESH_FOLLOW__MAX_POLL_S": "0.5",
    "SCCM_REFRESH_FOLLOW__SNAPSHOT_S": "0.5",
    "SCCM_REFRESH_FOLLOW__DEADLINE_S": "40",
}


def test_a_followed_request_survives_a_worker_crash(pipeline_factory: PipelineFactory) -> None:
    """Killed while the followed request's message counts down (unacked, its follow state inside):
    the message comes back to the restarted worker, which goes on following from that state (no
    second RefreshPkgSource) and publishes one `distributed` final."""
    pipeline = pipeline_factory(
        worker_extra_env={**SHORT_VISIBILITY_ENV, **_FOLLOW_ENV},
        emulator_overrides={"BS1": {"dp_copy_time_s": 0.05}},
        concurrency=2,
    )
    provider = pipeline.emulators["BS1"].provider
    pkg = pipeline.package("BS1", pkg_source_flag=2, package_class="SMS_Package")
    provider.control_distmgr(hold=True)
    crashed = threading.Event()

    def crash_while_following(outcome: Outcome) -> None:
        if outcome.status == "distributing" and not crashed.is_set():
            crashed.set()
            assert wait_until(lambda: _following_copy_held(pipeline, outcome.request_id), timeout_s=5)
            pipeline.worker.kill()
            provider.control_distmgr(hold=False, drain=True)
            pipeline.worker.start()

    run = pipeline.refresh(
        site_code="BS1",
        package_id=pkg["PackageID"],
        package_class=pkg["class"],
        until="distributed",
        on_event=crash_while_following,
        timeout_s=40,
    )
    assert crashed.is_set()
    assert run.final is not None and run.final.status == "distributed", run.statuses
    assert [o for o in run.stream if o.final] == [run.final]
    assert (run.final.source_version_before, run.final.source_version_after) == (
        pkg["SourceVersion"],
        pkg["SourceVersion"] + 1,
    )
    assert provider.call_totals()["invokes"] == 1


def _following_copy_held(pipeline: Pipeline, request_id: str) -> bool:
    """A worker holds the request's re-queued message, and it carries the follow state."""
    states = pipeline.held_retry_states(request_id)
    return bool(states) and all(state.get("follow") for state in states)
