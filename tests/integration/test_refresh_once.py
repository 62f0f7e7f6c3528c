"""No package is refreshed twice for one request: lost replies, redeliveries, coalesced duplicates.

Real Redis, real worker processes, the emulator over HTTP. "Refreshed" is what the emulator's call
log counts as an accepted RefreshPkgSource: every extra one would re-copy the package to every
distribution point.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import SHORT_VISIBILITY_ENV, UNACKED_HASH, Pipeline, PipelineFactory
from testing.slot_occupancy import slot_occupancy
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

PLAIN = 2


def calls(pipeline: Pipeline, site: str, package_id: str) -> dict[str, Any]:
    log: dict[str, Any] = pipeline.emulators[site].provider.call_log()["packages"].get(package_id, {})
    return {name: log.get(name, 0) for name in ("gets", "invokes", "accepted")}


def hinted(pkg: dict[str, Any]) -> dict[str, Any]:
    """A request that carries the package's properties, so its first operation is the Invoke."""
    hint = {"name": pkg["Name"], "pkg_source_flag": pkg["PkgSourceFlag"], "source_version": pkg["SourceVersion"]}
    hint["action_in_progress"] = pkg["ActionInProgress"]
    return {"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"], "package_hint": hint}


def test_an_invoke_whose_reply_is_lost_is_not_sent_again_in_call(pipeline: Pipeline) -> None:
    """The provider refreshes, the connection drops: the retry reads the package and stops there."""
    pkg = pipeline.package("BS1", pkg_source_flag=PLAIN)
    before = calls(pipeline, "BS1", pkg["PackageID"])
    pipeline.emulators["BS1"].faults.inject_next("lost_reply")
    run = pipeline.refresh(**hinted(pkg))
    assert run.final is not None and run.final.status == "accepted", run.statuses
    after = calls(pipeline, "BS1", pkg["PackageID"])
    assert after["invokes"] - before["invokes"] == 1 and after["accepted"] - before["accepted"] == 1
    assert after["gets"] - before["gets"] == 1  # the look before a second invoke


@pytest.fixture(scope="module")
def no_in_call_retry(pipeline_factory: PipelineFactory) -> Pipeline:
    """In-call retries off: a lost reply re-queues the request, as a worker crash redelivers it."""
    return pipeline_factory(worker_extra_env={"SCCM_REFRESH_RETRY__IN_CALL__MAX_ATTEMPTS": "1"})


def test_a_redelivered_request_whose_invoke_landed_does_not_refresh_again(no_in_call_retry: Pipeline) -> None:
    """The next delivery finds the invoke fence, sees the package moved, and ends accepted."""
    pipeline = no_in_call_retry
    pkg = pipeline.package("BS1", pkg_source_flag=PLAIN)
    before = calls(pipeline, "BS1", pkg["PackageID"])
    pipeline.emulators["BS1"].faults.inject_next("lost_reply")
    run = pipeline.refresh(**hinted(pkg))
    assert run.final is not None and run.final.status == "accepted"
    assert run.statuses == ["retrying", "accepted"]  # a second delivery, not an in-call retry
    after = calls(pipeline, "BS1", pkg["PackageID"])
    assert after["invokes"] - before["invokes"] == 1 and after["accepted"] - before["accepted"] == 1


def test_duplicates_of_a_pending_refresh_join_it_and_end_with_its_outcome(pipeline: Pipeline) -> None:
    """While a refresh waits for its medium, duplicates join it: one accepted refresh for all."""
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    kwargs = {"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]}
    before = calls(pipeline, "PS1", pkg["PackageID"])
    results: dict[str, Any] = {}

    def follow(name: str) -> None:
        results[name] = pipeline.refresh(**kwargs, timeout_s=60)

    leader = threading.Thread(target=follow, args=("leader",))
    leader.start()
    assert wait_until(lambda: calls(pipeline, "PS1", pkg["PackageID"])["invokes"] > before["invokes"], timeout_s=20)
    followers = [threading.Thread(target=follow, args=(f"dup-{i}",)) for i in range(3)]
    for thread in followers:
        thread.start()
    # Joined requests publish nothing while they wait: the worker's log says when they joined.
    joined = "joined the pending refresh"
    assert wait_until(lambda: pipeline.worker.output().count(joined) >= 3, timeout_s=20)
    provider.set_medium_ready(pkg["PackageID"], True)
    for thread in (leader, *followers):
        thread.join(timeout=70)

    lead: Outcome | None = results["leader"].final
    assert lead is not None and lead.status == "accepted" and lead.joined_request_id is None
    for i in range(3):
        final = results[f"dup-{i}"].final
        assert final is not None and final.status == "accepted" and final.joined_request_id == lead.request_id
    after = calls(pipeline, "PS1", pkg["PackageID"])
    assert after["accepted"] - before["accepted"] == 1

    # Once accepted, a new request refreshes again: the source may have changed since.
    again = pipeline.refresh(**kwargs)
    assert again.final is not None and again.final.status == "accepted" and again.final.joined_request_id is None
    assert calls(pipeline, "PS1", pkg["PackageID"])["accepted"] - after["accepted"] == 1


@pytest.fixture(scope="module")
def capped(pipeline_factory: PipelineFactory) -> Pipeline:
    """One slot at BS1, leased for 3 s; the provider takes 20 s to answer."""
    return pipeline_factory(
        emulator_overrides={"BS1": {"latency_s": 20.0}},
        worker_extra_env={
            "SCCM_REFRESH_PROVIDERS__BS1__MAX_CONCURRENCY": "1",
            "SCCM_REFRESH_PROVIDERS__BS1__OPERATION_TIMEOUT_S": "25",
            "SCCM_REFRESH_PROVIDERS__BS1__READ_TIMEOUT_S": "30",
            "SCCM_REFRESH_LIMITS__SLOT_LEASE_S": "3",
        },
    )


def test_a_worker_killed_holding_a_slot_frees_it_when_its_lease_ends(capped: Pipeline) -> None:
    """SIGKILL mid-operation: the slot stays taken for the rest of its lease, then frees itself."""
    pipeline = capped
    pkg = pipeline.package("BS1", pkg_source_flag=PLAIN)
    pipeline.send({"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]})
    assert pipeline.emulators["BS1"].wait_in_flight(EMULATOR_USERNAME, 1, timeout_s=15)
    assert slot_occupancy(pipeline.outcome_redis(), pipeline.keys, "BS1").in_use == 1
    killed_at = time.monotonic()
    pipeline.worker.kill()
    assert wait_until(lambda: slot_occupancy(pipeline.outcome_redis(), pipeline.keys, "BS1").in_use == 0, timeout_s=10)
    assert time.monotonic() - killed_at <= 4.0  # not beyond the 3 s lease (plus polling)
    pipeline.worker.start()


def test_a_request_whose_message_is_lost_is_sent_again_by_the_watch(pipeline_factory: PipelineFactory) -> None:
    """kombu can lose a message a worker died holding (BRPOP, then unacked): the watch sends it again."""
    pipeline = pipeline_factory(worker_extra_env=SHORT_VISIBILITY_ENV, concurrency=2)
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    lost: list[str] = []

    def lose_the_message(outcome: Outcome) -> None:
        if outcome.status != "retrying" or lost:
            return
        assert wait_until(lambda: pipeline.held_retry_states(outcome.request_id) != [], timeout_s=5)
        pipeline.worker.kill()
        client = pipeline.redis()
        try:  # what a kill between BRPOP and the unacked record leaves: no copy of the message anywhere
            lost.extend(str(tag) for tag in client.hkeys(UNACKED_HASH))
            client.delete(UNACKED_HASH, "unacked_index", pipeline.queue)
        finally:
            client.close()
        provider.set_medium_ready(pkg["PackageID"], True)
        pipeline.worker.start()

    run = pipeline.refresh(
        site_code="PS1",
        package_id=pkg["PackageID"],
        package_class=pkg["class"],
        on_event=lose_the_message,
        timeout_s=60,
    )
    assert lost, "the retry message was never held"
    assert run.final is not None and run.final.status == "accepted", run.statuses
    assert "was not seen when due (its message was lost): sent again" in pipeline.worker.output()
    assert [o for o in run.stream if o.final] == [run.final]
