"""Requests followed to every DP (until=distributed): real Celery worker, real Redis, the emulator over HTTP.

Two emulated sites with short copy times. BS1: five DPs (DP05 a pull DP), a failed copy retried
once then failed. OS1: DP02 offline for good, retried every half second for ever (ConfigMgr's
100 retries, in short). The worker polls every 0.5 s (per-site snapshots of 0.5 s) and gives up following after 8 s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from testing.fixtures_pipeline import Pipeline, PipelineFactory, RefreshRun, fast_follow_env
from testing.following import Pick, emulated_provider, follow, only_final, package_picker
from testing.offline_site import offline_dp_site
from testing.waiting import wait_until

pytestmark = pytest.mark.integration

# Room for the packages followed together through DistMgr and 5 DPs each on a busy machine (the suite runs 3 files
# at once); the timed-out case waits this out, so no longer than that.
_DEADLINE_S = 15.0
# Requests followed together, all accepted before DistMgr is let go: few enough that the last is
# accepted well inside the first one's deadline on a busy machine.
_TOGETHER = 12
_FOLLOW_ENV = fast_follow_env(_DEADLINE_S, max_dp_rows="3")
_FAST_DPS: dict[str, Any] = {
    "dp_copy_time_s": 0.05,
    "dp_retry_delay_s": 0.05,
    "dp_retry_count": 1,
    "package_count": 300,
}
_OFFLINE_SITE = "OS1"


@pytest.fixture(scope="module")
def followed(pipeline_factory: PipelineFactory) -> Pipeline:
    offline_site, providers = offline_dp_site(_OFFLINE_SITE)
    return pipeline_factory(
        emulator_overrides={"BS1": _FAST_DPS},
        extra_emulators={_OFFLINE_SITE: offline_site},
        extra_providers=providers,
        worker_extra_env=_FOLLOW_ENV,
        concurrency=2,
    )


@pytest.fixture(scope="module")
def fresh_package(followed: Pipeline) -> Pick:
    return package_picker(followed)


def _follow(pipeline: Pipeline, pkg: dict[str, Any], site: str = "BS1") -> RefreshRun:
    return follow(pipeline, pkg, site=site, timeout_s=_DEADLINE_S + 10)


def test_a_request_is_followed_until_every_dp_holds_the_new_version(followed: Pipeline, fresh_package: Pick) -> None:
    """distributing events, then one `distributed` final at V1 on all five DPs (the pull DP included)."""
    pkg = fresh_package()
    v0 = pkg["SourceVersion"]
    run = _follow(followed, pkg)
    final = only_final(followed, run)
    assert final.status == "distributed", final.distribution
    assert run.statuses[0] == "distributing" and set(run.statuses[:-1]) == {"distributing"}
    assert (final.source_version_before, final.source_version_after) == (v0, v0 + 1)
    block = final.distribution
    assert block is not None
    assert (block["phase"], block["targets"], block["next_poll_at"]) == ("dps", 5, None)
    assert block["counts"] == {"done": 5, "waiting": 0, "retrying": 0, "failed": 0, "unknown": 0, "removed": 0}
    assert len(block["dps"]) == 3 and block["dps_omitted"] == 2  # FOLLOW__MAX_DP_ROWS=3
    assert {row["status"] for row in block["dps"]} == {"done"}
    assert all(row["source_version"] == v0 + 1 and row["message_id"] is not None for row in block["dps"])
    rows = emulated_provider(followed, "BS1").distribution_rows(pkg["PackageID"])
    assert rows is not None and {row["source_version"] for row in rows} == {v0 + 1}


def test_a_dp_failing_its_copies_ends_distributed_with_failures(followed: Pipeline, fresh_package: Pick) -> None:
    """DP03 fails every copy: once its retry is used up (State 3) and the rest are done, the final names it."""
    pkg = fresh_package()
    provider = emulated_provider(followed, "BS1")
    provider.control_distribution(dp="DP03", failure_share=1.0)
    try:
        run = _follow(followed, pkg)
    finally:
        provider.control_distribution(dp="DP03", failure_share=0.0)
    final = only_final(followed, run)
    assert final.status == "distributed_with_failures", final.distribution
    block = final.distribution
    assert block is not None
    assert (block["counts"]["done"], block["counts"]["failed"]) == (4, 1)
    first = block["dps"][0]  # stragglers first
    assert (first["dp"].split(".")[0], first["status"], first["state"]) == ("DP03", "failed", 3)
    assert first["source_version"] == pkg["SourceVersion"]


def test_an_offline_dp_makes_the_request_time_out_with_the_dp_named(followed: Pipeline, fresh_package: Pick) -> None:
    """OS1's DP02 retries for ever and DP04's schedule stays closed: at the deadline the final is
    distribution_timed_out, DP02 retrying and DP04 waiting, neither failed."""
    pkg = fresh_package(_OFFLINE_SITE)
    provider = emulated_provider(followed, _OFFLINE_SITE)
    provider.control_distribution(dp="DP04", schedule=(None, 0.0))
    try:
        run = _follow(followed, pkg, site=_OFFLINE_SITE)
    finally:
        provider.control_distribution(dp="DP04", clear_schedule=True)
    final = only_final(followed, run)
    assert final.status == "distribution_timed_out", final.distribution
    block = final.distribution
    assert block is not None
    counts = block["counts"]
    assert (counts["done"], counts["retrying"], counts["waiting"], counts["failed"]) == (3, 1, 1, 0)
    named = [(row["dp"].split(".")[0], row["status"]) for row in block["dps"][:2]]
    assert named == [("DP02", "retrying"), ("DP04", "waiting")]
    assert _DEADLINE_S <= (final.finished_at - final.requested_at).total_seconds() < _DEADLINE_S + 5


def test_rows_at_the_old_version_in_state_0_are_never_counted_as_done(followed: Pipeline, fresh_package: Pick) -> None:
    """DistMgr held: SourceVersion never passes V0 and every DP row reads State 0 at V0; the request is
    not `distributed` (the V0/V1 trap) but times out still waiting for V1."""
    pkg = fresh_package()
    provider = emulated_provider(followed, "BS1")
    provider.control_distmgr(hold=True)
    try:
        run = _follow(followed, pkg)
        rows = provider.distribution_rows(pkg["PackageID"])
    finally:
        provider.control_distmgr(hold=False, drain=True)
    final = only_final(followed, run)
    assert final.status == "distribution_timed_out", final.distribution
    assert (final.source_version_before, final.source_version_after) == (pkg["SourceVersion"], None)
    block = final.distribution
    assert block is not None and block["phase"] == "source" and block["counts"]["done"] == 0
    assert block["targets"] == 5 and block["counts"]["waiting"] == 5
    assert not any(o.distribution and o.distribution["counts"]["done"] for o in run.live)
    # What a naive "every row State 0" check would have taken for success:
    assert rows is not None and all(row["state"] == 0 and row["source_version"] == pkg["SourceVersion"] for row in rows)


def test_packages_followed_together_share_their_reads(followed: Pipeline, fresh_package: Pick) -> None:
    """Twelve requests followed at once at one site, DistMgr slow to process them: their polls are
    answered from per-site snapshots (one chunked read per interval for all), not one Get each."""
    provider = emulated_provider(followed, "BS1")
    packages = [fresh_package() for _ in range(_TOGETHER)]
    before = provider.call_totals()
    provider.control_distmgr(hold=True)
    try:
        ids = [
            followed.send(
                {"site_code": "BS1", "package_id": p["PackageID"], "package_class": p["class"], "until": "distributed"}
            )
            for p in packages
        ]

        def all_accepted() -> bool:
            return set(ids) <= {o.request_id for o in followed.stream_outcomes() if o.status == "distributing"}

        # Generous: the suite shares the machine; the follow deadline starts at each acceptance.
        assert wait_until(all_accepted, timeout_s=30)
        time.sleep(1.0)  # DistMgr's queue, as a site's would be: every request polls for V1 meanwhile
    finally:
        provider.control_distmgr(hold=False, drain=True)
    assert wait_until(lambda: all(rid in followed.finals() for rid in ids), timeout_s=_DEADLINE_S + 10)
    after = provider.call_totals()
    finals = [followed.finals()[rid] for rid in ids]
    assert all(len(f) == 1 and f[0].status == "distributed" for f in finals), [f[0].status for f in finals]
    polls = sum(f[0].distribution["polls"] for f in finals if f[0].distribution)
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in ("gets", "enumerates", "pulls", "invokes")}
    print(f"{_TOGETHER} followed packages: {polls} polls, provider operations {calls}")
    # The only Gets are the refreshes' own (one before each Invoke): no poll read its own SourceVersion.
    assert (calls["gets"], calls["invokes"]) == (_TOGETHER, _TOGETHER)
    # Enumerations: each request's own two (its targets at acceptance, its DPs' last messages for
    # its final), plus the shared snapshots: far fewer than one per poll.
    snapshots = calls["enumerates"] - 2 * _TOGETHER
    assert 0 < snapshots < polls / 4
