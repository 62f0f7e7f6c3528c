"""A dead worker's holdings come back within seconds, with the shipped visibility timeout (one hour).

Holdings are the messages kombu records as unacked for a worker: the one it runs, and those it
keeps in memory until their countdown (every request waiting for its medium is one). Before, a
SIGKILL left them in kombu's unacked hash until the visibility timeout. Each worker now lists its
holdings under an id whose alive key a heartbeat renews; once that key lapses (15 s), the next
recovery take (every 5 s) names the holder and a live worker puts its messages back.

Real Redis, two real worker processes, the emulator; only the retry policy is test-sized (the
medium re-checked every 1-2 s) and the visibility timeout is the shipped one.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from testing.fixtures_pipeline import Pipeline, PipelineFactory
from testing.waiting import wait_until
from worker.broker.transport import transport_options

pytestmark = pytest.mark.integration

# Patient medium waits: each request lives on as a countdown message held by some worker.
PATIENT_MEDIUM_ENV = {
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "500",
    "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "1",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "2",
}
REQUESTS = 6
# Alive TTL (15 s) + recovery interval (5 s) + a medium retry and a refresh, with room for a
# loaded 2-core machine; the visibility timeout it replaces is 3,600 s.
RECOVERY_BOUND_S = 45


# A catalogue with enough STORAGE_COMPRESS packages for REQUESTS distinct ones.
LARGER_CATALOGUE = {"PS1": {"package_count": 200}}


def _two_workers(pipeline_factory: PipelineFactory) -> Pipeline:
    return pipeline_factory(
        worker_processes=2, worker_extra_env=PATIENT_MEDIUM_ENV, emulator_overrides=LARGER_CATALOGUE
    )


@pytest.fixture(scope="module")
def two_workers(pipeline_factory: PipelineFactory) -> Pipeline:
    return _two_workers(pipeline_factory)


def _waiting_requests(pipeline: Pipeline, count: int) -> tuple[list[str], list[dict[str, Any]]]:
    provider = pipeline.emulators["PS1"].provider
    packages: list[dict[str, Any]] = []
    for _ in range(count):
        pkg = pipeline.package("PS1", pkg_source_flag=3, exclude=tuple(p["PackageID"] for p in packages))
        provider.set_medium_ready(pkg["PackageID"], False)
        packages.append(pkg)
    request_ids = [
        pipeline.send({"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]})
        for pkg in packages
    ]
    return request_ids, packages


def _held_by(pipeline: Pipeline, pid: int) -> set[str]:
    """Delivery tags the worker with this PID holds (listed in its holdings and in kombu's unacked hash)."""
    prefix = transport_options(prefix=pipeline.keys.prefix, main_queue=pipeline.queue)["inflight_prefix"]
    client = pipeline.redis()
    try:
        tags: set[str] = set()
        for holder in client.smembers(f"{prefix}:holders"):
            if f":{pid}:" in holder:
                tags |= {tag for tag in client.smembers(f"{holder}:held") if client.hexists("unacked", tag)}
        return tags
    finally:
        client.close()


def _one_final_each(pipeline: Pipeline, request_ids: list[str]) -> bool:
    finals = pipeline.finals()
    return all(len(finals.get(rid, [])) == 1 for rid in request_ids)


def _release(pipeline: Pipeline, packages: list[dict[str, Any]]) -> None:
    for pkg in packages:
        pipeline.emulators["PS1"].provider.set_medium_ready(pkg["PackageID"], True)


def test_countdown_messages_of_a_sigkilled_worker_reach_their_final_within_seconds(two_workers: Pipeline) -> None:
    """SIGKILL a worker holding countdown messages: each request still ends once, well before the hour."""
    victim, survivor = two_workers.workers
    request_ids, packages = _waiting_requests(two_workers, REQUESTS)
    try:
        assert wait_until(lambda: len(_held_by(two_workers, victim.pid)) >= 1, timeout_s=30), "victim held nothing"
        victim.kill()
        killed_at = time.monotonic()
    finally:
        _release(two_workers, packages)
    assert wait_until(lambda: _one_final_each(two_workers, request_ids), timeout_s=RECOVERY_BOUND_S), (
        f"not every request final {time.monotonic() - killed_at:.0f} s after the kill"
    )
    assert all(final.status == "accepted" for rid in request_ids for final in two_workers.finals()[rid])
    assert "held by a dead consumer back on their queues" in survivor.output()


def test_a_frozen_worker_resumed_after_its_holdings_moved_runs_none_of_them_twice(
    pipeline_factory: PipelineFactory,
) -> None:
    """SIGSTOP a worker past its alive TTL, let the other finish its work, SIGCONT it: one final each."""
    pipeline = _two_workers(pipeline_factory)
    frozen, _ = pipeline.workers
    request_ids, packages = _waiting_requests(pipeline, REQUESTS)
    try:
        assert wait_until(lambda: len(_held_by(pipeline, frozen.pid)) >= 1, timeout_s=30), "nothing held to freeze"
        os.kill(frozen.pid, signal.SIGSTOP)
    finally:
        _release(pipeline, packages)
    provider = pipeline.emulators["PS1"].provider
    try:
        assert wait_until(lambda: _one_final_each(pipeline, request_ids), timeout_s=RECOVERY_BOUND_S)
        # A call the frozen worker had on the wire when it stopped may still have been answered
        # "accepted" once the media were mounted (at-least-once towards SCCM); what it must not
        # do is call again once it wakes.
        log_before = provider.call_log()["packages"]
        accepted_before = {pkg["PackageID"]: log_before[pkg["PackageID"]]["accepted"] for pkg in packages}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Awake again, it fires the countdowns it still has in memory: each must find its final and stop.
    assert wait_until(lambda: len(_held_by(pipeline, frozen.pid)) == 0, timeout_s=20)
    finals = pipeline.finals()
    assert all(len(finals[rid]) == 1 for rid in request_ids), {rid: len(finals[rid]) for rid in request_ids}
    log = provider.call_log()["packages"]
    assert all(accepted_before[pkg["PackageID"]] >= 1 for pkg in packages), accepted_before
    assert {pkg["PackageID"]: log[pkg["PackageID"]]["accepted"] for pkg in packages} == accepted_before
