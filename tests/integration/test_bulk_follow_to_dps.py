"""A bulk followed to every DP (until=distributed): real worker, real Redis, the emulator over HTTP, the API, the CLI.

One emulated site, OS1, with short copy times and DP02 offline for good (retried every half second
for ever). The site's cap is one provider call at a time and the bulk's window one child: the
children leave the window once accepted, so all four are followed at once and the bulk ends about
one follow deadline after its start, not four. Each child ends `distribution_timed_out` with DP02
retrying; the bulk counts them by distribution state and its stragglers name DP02 with all four.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testing.cli_process import pipeline_env, run_cli
from testing.fixtures_api import SUBMIT_TOKEN, ApiServer
from testing.fixtures_pipeline import Pipeline, PipelineFactory, fast_follow_env
from testing.offline_site import offline_dp_site
from testing.waiting import wait_until
from worker.stores.bulk_outcomes import BulkOutcome
from worker.stores.outcome_reader import read_events

pytestmark = pytest.mark.integration

_SITE = "OS1"
_CHILDREN = 4
_DEADLINE_S = 10.0
_FOLLOW_ENV = {**fast_follow_env(_DEADLINE_S, max_dp_rows="3"), "SCCM_REFRESH_LIMITS__BULK_WINDOW_EXTRA": "0"}
_TIMED_OUT_ONLY = {"distributing": 0, "distributed": 0, "distributed_with_failures": 0, "distribution_timed_out": 4}


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    """The module's pipeline (the API fixture sits in front of it): OS1 with DP02 offline, a cap of one."""
    offline_site, providers = offline_dp_site(_SITE, provider_extra={"max_concurrency": "1"})
    return pipeline_factory(
        extra_emulators={_SITE: offline_site},
        extra_providers=providers,
        worker_extra_env=_FOLLOW_ENV,
        concurrency=2,
    )


@pytest.fixture(scope="module")
def client(pipeline_api: ApiServer) -> Iterator[httpx.Client]:
    with pipeline_api.client(SUBMIT_TOKEN) as api_client:
        yield api_client


@pytest.fixture(scope="module")
def followed_bulk(pipeline: Pipeline, client: httpx.Client) -> dict[str, Any]:
    """Four packages of OS1 refreshed as a bulk with until=distributed, watched while it runs and once over."""
    packages = [p for p in pipeline.emulators[_SITE].provider.packages() if p["PkgSourceFlag"] == 2]
    chosen = [p["PackageID"] for p in packages if p["class"] == "SMS_Package"][:_CHILDREN]
    started = time.monotonic()
    accepted = client.post(
        "/v1/bulk-refreshes", json={"site_code": _SITE, "package_ids": chosen, "until": "distributed"}
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["until"] == "distributed"
    bulk_id = accepted.json()["bulk_id"]
    seen_while_running: list[dict[str, Any]] = []

    def all_followed() -> bool:
        status = client.get(f"/v1/bulk-refreshes/{bulk_id}").json()
        stragglers = client.get(f"/v1/bulk-refreshes/{bulk_id}/stragglers").json()
        seen_while_running[:] = [status, stragglers]
        return bool(status["distribution"]["distributing"] == _CHILDREN)

    assert wait_until(all_followed, timeout_s=_DEADLINE_S, poll_s=0.2), json.dumps(seen_while_running)

    def over() -> bool:
        return client.get(f"/v1/bulk-refreshes/{bulk_id}").json()["finished_at"] is not None

    assert wait_until(over, timeout_s=3 * _DEADLINE_S, poll_s=0.3)
    return {
        "bulk_id": bulk_id,
        "elapsed_s": time.monotonic() - started,
        "while_running": seen_while_running,
        "status": client.get(f"/v1/bulk-refreshes/{bulk_id}").json(),
        "stragglers": client.get(f"/v1/bulk-refreshes/{bulk_id}/stragglers").json(),
    }


def test_followed_children_leave_the_window_and_are_all_followed_at_once(followed_bulk: dict[str, Any]) -> None:
    """Window of one, four children: all four distributing together, each counted where its last event left it."""
    status, stragglers = followed_bulk["while_running"]
    assert status["state"] == "running" and status["outstanding"] == 0 and status["until"] == "distributed"
    assert stragglers["following"] == _CHILDREN
    # A child's first event is at acceptance, SourceVersion not risen yet: held at the site server
    # (no DP named) until an event says otherwise.
    assert stragglers["held_at_source"] + sum(dp["held"] for dp in stragglers["dps"]) >= 1
    # One deadline (and the acceptances), not four: following never held the window.
    assert followed_bulk["elapsed_s"] < 2.5 * _DEADLINE_S


def test_the_bulk_ends_with_its_children_counted_by_distribution_state(
    pipeline: Pipeline, followed_bulk: dict[str, Any]
) -> None:
    """GET and the bulk's final outcome (version 2): four `distribution_timed_out`, none still distributing."""
    status = followed_bulk["status"]
    assert status["state"] == "done" and status["counts"] == {"distribution_timed_out": _CHILDREN}
    assert status["distribution"] == _TIMED_OUT_ONLY
    client = pipeline.outcome_redis()
    try:
        events = read_events(client, pipeline.keys, count=100_000)
    finally:
        client.close()
    (final,) = [e.outcome for e in events if isinstance(e.outcome, BulkOutcome)]
    document = final.to_dict()
    assert (document["version"], document["until"], document["distribution"]) == (2, "distributed", _TIMED_OUT_ONLY)


def test_the_stragglers_report_names_the_offline_dp_with_every_package(followed_bulk: dict[str, Any]) -> None:
    """DP02 (offline) holds all four back, retrying; the DPs that got the content are not listed."""
    report = followed_bulk["stragglers"]
    assert report["following"] == 0 and report["state"] == "done"
    (dp02,) = report["dps"]
    assert dp02["dp"].startswith("DP02")
    assert (dp02["held"], dp02["retrying"], dp02["failed"], dp02["waiting"]) == (_CHILDREN, _CHILDREN, 0, 0)
    assert (report["dps_omitted"], report["held_at_source"], report["unlisted_rows"]) == (0, 0, 0)


def test_the_stragglers_route_refuses_bad_input_and_answers_404_for_an_unknown_bulk(
    client: httpx.Client, followed_bulk: dict[str, Any]
) -> None:
    """Unknown bulk: 404; not a bulk id, or a limit out of [1, 500]: 422; a limit lists at most that many DPs."""
    unknown = f"bulk-{'0' * 32}"
    assert client.get(f"/v1/bulk-refreshes/{unknown}/stragglers").status_code == 404
    assert client.get("/v1/bulk-refreshes/PS1/stragglers").status_code == 422
    for limit in ("0", "501", "x"):
        refused = client.get(f"/v1/bulk-refreshes/{followed_bulk['bulk_id']}/stragglers", params={"limit": limit})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "limit"], limit
    bad_until = client.post("/v1/bulk-refreshes", json={"site_code": _SITE, "until": "everywhere"})
    assert bad_until.status_code == 422 and bad_until.json()["detail"][0]["loc"] == ["body", "until"]


def _cli(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=pipeline_env(pipeline, COLUMNS="160"))


def test_status_dps_shows_the_stragglers_as_a_table_and_as_json(
    pipeline: Pipeline, followed_bulk: dict[str, Any]
) -> None:
    """`status BULK --dps`: DP02 and its four packages, retrying; `--json` is the API's report."""
    bulk_id = followed_bulk["bulk_id"]
    table = _cli(pipeline, "status", bulk_id, "--dps")
    assert table.returncode == 0, table.stderr
    (dp02_line,) = [line for line in table.stdout.splitlines() if "DP02" in line]
    # Columns: DP, held back, waiting, retrying, failed, unknown.
    assert [cell.strip() for cell in dp02_line.split("│")[2:7]] == ["4", "0", "4", "0", "0"], table.stdout
    as_json = _cli(pipeline, "status", bulk_id, "--dps", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == followed_bulk["stragglers"]
    status = _cli(pipeline, "status", bulk_id)
    assert status.returncode == 0 and "distribution_timed_out" in status.stdout and "distributing" in status.stdout


def test_the_cli_refuses_a_bad_until_with_exit_2(pipeline: Pipeline) -> None:
    refused = _cli(pipeline, "bulk", _SITE, "--until", "everywhere")
    assert refused.returncode == 2 and "--until" in refused.stderr and "Traceback" not in refused.stderr
    unknown = _cli(pipeline, "status", f"bulk-{'0' * 32}", "--dps")
    assert unknown.returncode == 1 and "no bulk job" in unknown.stdout
