"""Following on a site of 20 DPs (one pull DP, one offline, one failing 30 % of its copies), single and bulk.

Real Celery worker, real Redis, the emulator over HTTP (Basic). TW1 has DP01..DP20, DP20 a pull
DP (three times slower), DP02 offline (each copy fails; after its retries the row is State 3),
DP03 failing 30 % of its transfers (retried up to 8 times, 0.05 s apart: it lands). The worker
polls every 0.5 s and gives up following after 20 s; FOLLOW__MAX_DP_ROWS is 25, so every DP is
listed. Short copy and poll times are the only test-sized settings: what is checked is which
final each DP's fate leads to, not how long copies take.
"""

from __future__ import annotations

from typing import Any

import pytest

from emulator.sms.provider import Provider
from testing.fixtures_api import SUBMIT_TOKEN, ApiServer
from testing.fixtures_emulator import make_emulator_settings
from testing.fixtures_pipeline import Pipeline, PipelineFactory, RefreshRun, fast_follow_env
from testing.following import basic_site_provider
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

_SITE = "TW1"
_DPS = 20
_DEADLINE_S = 20.0
_FOLLOW_ENV = fast_follow_env(_DEADLINE_S, max_dp_rows="25")


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    site = make_emulator_settings(
        site_code=_SITE,
        auth_modes=("basic",),
        allow_unencrypted=True,
        package_count=60,
        dp_count=_DPS,
        pull_dp_count=1,
        dp_copy_time_s=0.05,
        dp_retry_delay_s=0.05,
        dp_retry_count=8,
        dp_offline=("DP02",),
        dp_failing=("DP03",),
        dp_failure_share=0.3,
    )

    def providers(emulators: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {_SITE: basic_site_provider(emulators[_SITE].url)}

    return pipeline_factory(
        extra_emulators={_SITE: site}, extra_providers=providers, worker_extra_env=_FOLLOW_ENV, concurrency=2
    )


def _provider(pipeline: Pipeline) -> Provider:
    provider = pipeline.emulators[_SITE].provider
    assert isinstance(provider, Provider)
    return provider


_used: set[str] = set()


def _follow(pipeline: Pipeline) -> tuple[dict[str, Any], RefreshRun, Outcome]:
    pkg = pipeline.package(_SITE, pkg_source_flag=2, package_class="SMS_Package", exclude=tuple(_used))
    _used.add(pkg["PackageID"])
    run = pipeline.refresh(
        site_code=_SITE,
        package_id=pkg["PackageID"],
        package_class=pkg["class"],
        until="distributed",
        timeout_s=_DEADLINE_S + 15,
    )
    assert run.final is not None, run.statuses
    assert len(pipeline.finals()[run.request_id]) == 1
    return pkg, run, run.final


def _by_dp(final: Outcome) -> dict[str, dict[str, Any]]:
    block = final.distribution
    assert block is not None and block["targets"] == _DPS and block["dps_omitted"] == 0
    return {row["dp"].split(".")[0]: row for row in block["dps"]}


def test_the_offline_dp_fails_and_the_rest_land_at_v1_the_pull_and_flaky_ones_included(pipeline: Pipeline) -> None:
    """DP02 offline: its retries run out (State 3) while the 19 others reach V1, DP03 through its
    retries and DP20 pulling: `distributed_with_failures`, DP02 listed first, at V0."""
    pkg, run, final = _follow(pipeline)
    assert final.status == "distributed_with_failures", final.distribution
    assert set(run.statuses[:-1]) == {"distributing"}
    rows = _by_dp(final)
    assert final.distribution is not None and final.distribution["dps"][0]["dp"].startswith("DP02")
    assert (rows["DP02"]["status"], rows["DP02"]["state"], rows["DP02"]["source_version"]) == (
        "failed",
        3,
        pkg["SourceVersion"],
    )
    done = {dp for dp, row in rows.items() if row["status"] == "done"}
    assert done == {f"DP{n:02d}" for n in range(1, _DPS + 1)} - {"DP02"}
    assert all(rows[dp]["source_version"] >= pkg["SourceVersion"] + 1 for dp in done)


def test_with_the_dp_back_online_every_one_of_twenty_lands_and_the_request_is_distributed(pipeline: Pipeline) -> None:
    """DP02 back: 20 of 20 done at V1 (the pull DP last): `distributed`."""
    provider = _provider(pipeline)
    provider.control_distribution(dp="DP02", offline=False)
    try:
        pkg, _run, final = _follow(pipeline)
    finally:
        provider.control_distribution(dp="DP02", offline=True)
    assert final.status == "distributed", final.distribution
    rows = _by_dp(final)
    assert {row["status"] for row in rows.values()} == {"done"} and len(rows) == _DPS
    assert final.source_version_after == pkg["SourceVersion"] + 1


def test_a_dp_whose_schedule_stays_closed_makes_the_request_time_out_with_it_waiting(pipeline: Pipeline) -> None:
    """DP05's schedule closed and DP02 offline: at the deadline DP05 is still waiting (not failed),
    DP02 failed: `distribution_timed_out`, the 18 others done."""
    provider = _provider(pipeline)
    provider.control_distribution(dp="DP05", schedule=(None, 0.0))
    try:
        _pkg, _run, final = _follow(pipeline)
    finally:
        provider.control_distribution(dp="DP05", clear_schedule=True)
    assert final.status == "distribution_timed_out", final.distribution
    rows = _by_dp(final)
    assert (rows["DP05"]["status"], rows["DP02"]["status"]) == ("waiting", "failed")
    assert final.distribution is not None
    counts = final.distribution["counts"]
    assert (counts["done"], counts["waiting"], counts["failed"]) == (18, 1, 1)


def _bulk(pipeline: Pipeline, api: ApiServer, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """`count` packages as a bulk with until=distributed through the API: its record and stragglers once done."""
    chosen = [
        p["PackageID"]
        for p in pipeline.emulators[_SITE].provider.packages()
        if p["PkgSourceFlag"] == 2 and p["class"] == "SMS_Package" and p["PackageID"] not in _used
    ][:count]
    _used.update(chosen)
    with api.client(SUBMIT_TOKEN) as client:
        accepted = client.post(
            "/v1/bulk-refreshes", json={"site_code": _SITE, "package_ids": chosen, "until": "distributed"}
        )
        assert accepted.status_code == 202, accepted.text
        bulk_id = accepted.json()["bulk_id"]
        assert wait_until(
            lambda: client.get(f"/v1/bulk-refreshes/{bulk_id}").json()["finished_at"] is not None,
            timeout_s=2 * _DEADLINE_S + 10,
            poll_s=0.3,
        )
        return client.get(f"/v1/bulk-refreshes/{bulk_id}").json(), client.get(
            f"/v1/bulk-refreshes/{bulk_id}/stragglers"
        ).json()


def test_a_bulk_on_twenty_dps_ends_with_its_children_counted_and_the_offline_dp_named(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """Five packages as a bulk: every child ends `distributed_with_failures` (DP02), the bulk counts
    them so, and its stragglers report names DP02 alone, failed for all five."""
    status, report = _bulk(pipeline, pipeline_api, 5)
    assert status["state"] == "done" and status["counts"] == {"distributed_with_failures": 5}
    assert status["distribution"]["distributed_with_failures"] == 5
    (dp02,) = report["dps"]
    assert dp02["dp"].startswith("DP02") and (dp02["held"], dp02["failed"]) == (5, 5)


def test_a_bulk_on_twenty_dps_all_online_ends_distributed_with_no_straggler(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """DP02 back online: four children `distributed` on all 20 DPs (the pull and flaky ones included)."""
    provider = _provider(pipeline)
    provider.control_distribution(dp="DP02", offline=False)
    try:
        status, report = _bulk(pipeline, pipeline_api, 4)
    finally:
        provider.control_distribution(dp="DP02", offline=True)
    assert status["counts"] == {"distributed": 4} and report["dps"] == []


def test_a_bulk_on_twenty_dps_with_a_closed_schedule_times_out_naming_both_stragglers(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """DP05's schedule closed: three children `distribution_timed_out`; DP05 holds them back waiting
    and DP02 failed."""
    provider = _provider(pipeline)
    provider.control_distribution(dp="DP05", schedule=(None, 0.0))
    try:
        status, report = _bulk(pipeline, pipeline_api, 3)
    finally:
        provider.control_distribution(dp="DP05", clear_schedule=True)
    assert status["counts"] == {"distribution_timed_out": 3}
    held = {row["dp"].split(".")[0]: row for row in report["dps"]}
    assert set(held) == {"DP02", "DP05"}
    assert (held["DP05"]["waiting"], held["DP02"]["failed"]) == (3, 3)
