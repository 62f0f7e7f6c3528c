"""`GET /metrics`: Prometheus text that prometheus-client parses, behind a token, read in O(1).

Real uvicorn, real Redis, a real worker and the emulator: queue depth rises during a burst the
worker cannot take yet and falls back to zero; the outcome counters match the durable stream.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testing.fixtures_api import READ_TOKEN, SUBMIT_TOKEN, ApiServer
from testing.fixtures_pipeline import Pipeline
from testing.waiting import wait_until

pytestmark = pytest.mark.integration


def scrape(api: ApiServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with api.client(READ_TOKEN) as client:
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_need_a_token(pipeline_api: ApiServer) -> None:
    """401 without a token, like every /v1 route."""
    with pipeline_api.client() as client:
        assert client.get("/metrics").status_code == 401


def test_queue_depth_rises_during_a_burst_and_falls_to_zero(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """With the worker paused, 30 requests wait in our queue; once it resumes, none do."""
    queue_key = ("sccm_refresh_queue_depth", (("queue", pipeline.queue),))
    packages = [p for p in pipeline.emulators["BS1"].provider.packages() if p["PkgSourceFlag"] == 2][:3]
    os.kill(pipeline.worker.pid, signal.SIGSTOP)
    try:
        items = [
            {"site_code": "BS1", "package_id": packages[i % 3]["PackageID"], "package_class": packages[i % 3]["class"]}
            for i in range(30)
        ]
        with pipeline_api.client(SUBMIT_TOKEN) as client:
            accepted = client.post("/v1/refreshes", json={"packages": items})
        assert accepted.status_code == 202, accepted.text
        assert scrape(pipeline_api)[queue_key] >= 28  # the worker may have prefetched one or two
    finally:
        os.kill(pipeline.worker.pid, signal.SIGCONT)
    ids = {item["request_id"] for item in accepted.json()["refreshes"]}
    assert wait_until(lambda: ids <= set(pipeline.finals()), timeout_s=60)
    assert wait_until(lambda: scrape(pipeline_api)[queue_key] == 0, timeout_s=10)


def test_outcome_counters_match_the_stream(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """Every published event is counted once, by status and site, as the stream holds it."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="BS1", package_id=pkg["PackageID"], package_class=pkg["class"])
    assert run.final is not None
    in_stream = Counter((o.status, o.site_code) for o in pipeline.stream_outcomes())
    samples = scrape(pipeline_api)
    counted = {
        (dict(labels)["status"], dict(labels)["site"]): value
        for (name, labels), value in samples.items()
        if name == "sccm_refresh_outcomes_total"
    }
    assert counted == {key: float(count) for key, count in in_stream.items()}
    finals = sum(count for (status, _), count in in_stream.items() if status != "retrying")
    assert samples[("sccm_refresh_request_latency_seconds_count", ())] == finals
    assert samples[("sccm_refresh_provider_slots_limit", (("site", "BS1"),))] == 3
    assert samples[("sccm_refresh_workers_seen", ())] >= 1
