"""Bulk refreshes through the HTTP API, with the real pipeline: dry run, a real run, cancel.

Each bulk is followed over `GET /v1/events?correlation_id=<bulk id>`: its children's outcomes,
then `event: bulk`, the bulk's own final outcome. `GET /v1/bulk-refreshes/{id}` must agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testing.fixtures_api import SUBMIT_TOKEN, ApiServer, SseEvent, iter_sse
from testing.fixtures_pipeline import Pipeline
from worker.domain.criteria import DEFAULT_PACKAGE_CLASSES

pytestmark = pytest.mark.integration

BULK_WAIT_S = 90.0
PACKAGE = {"site_code": "PS1", "package_id": "PS100001"}


def bulk_final(events: Iterator[SseEvent]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The bulk's final outcome and the children's outcomes seen before it."""
    children: list[dict[str, Any]] = []
    for event in events:
        if event.event == "outcome" and event.data:
            children.append(json.loads(event.data))
        if event.event == "bulk" and event.data:
            return json.loads(event.data), children
    raise AssertionError(f"no bulk outcome; {len(children)} child events")


def start(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/bulk-refreshes", json=body)
    assert response.status_code == 202, response.text
    bulk_id: str = response.json()["bulk_id"]
    assert response.headers["Location"] == f"/v1/bulk-refreshes/{bulk_id}"
    return bulk_id


def follow(client: httpx.Client, bulk_id: str) -> Iterator[SseEvent]:
    """The bulk's events from the start of the stream (the bulk may finish before we connect)."""
    return iter_sse(client, "/v1/events", params={"correlation_id": bulk_id, "after": "0-0"}, deadline_s=BULK_WAIT_S)


def test_a_dry_run_counts_the_selection_and_refreshes_nothing(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """dry_run: `done` with the classes selected, total = the matching packages and a sample; no child runs."""
    packages = pipeline.emulators["BS1"].provider.packages()
    wanted = [p for p in packages if p["PkgSourceFlag"] == 2 and p["class"] in DEFAULT_PACKAGE_CLASSES]
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        accepted = client.post(
            "/v1/bulk-refreshes", json={"site_code": "BS1", "pkg_source_flags": [2], "dry_run": True}
        )
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["package_classes"] == list(DEFAULT_PACKAGE_CLASSES)
        bulk_id = accepted.json()["bulk_id"]
        final, children = bulk_final(follow(client, bulk_id))
        status = client.get(f"/v1/bulk-refreshes/{bulk_id}")
    assert final["state"] == "done" and final["dry_run"] is True and children == []
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["state"] == "done" and body["dry_run"] is True
    assert body["package_classes"] == ["SMS_Package", "SMS_DriverPackage"]
    assert body["total"] == len(wanted) and body["finished"] == 0
    assert body["sample"] and {s["package_id"] for s in body["sample"]} <= {p["PackageID"] for p in wanted}


def test_a_bulk_refreshes_each_selected_package_once(pipeline: Pipeline, pipeline_api: ApiServer) -> None:
    """A real run: one final outcome per selected package, and the counts add up to the total."""
    packages = pipeline.emulators["BS1"].provider.packages()
    chosen = [p["PackageID"] for p in packages if p["PkgSourceFlag"] == 2 and p["class"] in DEFAULT_PACKAGE_CLASSES][:4]
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        bulk_id = start(client, {"site_code": "BS1", "package_ids": chosen})
        final, children = bulk_final(follow(client, bulk_id))
        status = client.get(f"/v1/bulk-refreshes/{bulk_id}").json()
    finals = [c for c in children if c["final"]]
    assert sorted(c["package_id"] for c in finals) == sorted(chosen)
    assert final["state"] == "done" and final["total"] == len(chosen)
    assert status["state"] == "done" and status["total"] == len(chosen) == sum(status["counts"].values())


def test_cancel_stops_a_bulk_and_its_children_not_yet_attempted_end_cancelled(
    pipeline: Pipeline, pipeline_api: ApiServer
) -> None:
    """Cancel right after the start: state `cancelled`, every child accounted for, the count adds up."""
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        bulk_id = start(client, {"site_code": "BS1"})
        cancelled = client.post(f"/v1/bulk-refreshes/{bulk_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        final, _children = bulk_final(follow(client, bulk_id))
        status = client.get(f"/v1/bulk-refreshes/{bulk_id}").json()
    assert final["state"] == "cancelled"
    assert status["state"] == "cancelled"
    assert status["total"] is not None and sum(status["counts"].values()) == status["total"]
    assert status["pending"] == 0 and status["outstanding"] == 0


def test_bulk_routes_refuse_bad_input_and_unknown_ids(pipeline_api: ApiServer) -> None:
    """Unknown fields (raw WQL too), an unforced task sequence, application content, bad ids: 422; unknown: 404."""
    with pipeline_api.client(SUBMIT_TOKEN) as client:
        wql = client.post("/v1/bulk-refreshes", json={"site_code": "PS1", "wql": "SELECT * FROM SMS_Package"})
        assert wql.status_code == 422 and wql.json()["detail"][0]["loc"] == ["body", "wql"]
        ts = client.post(
            "/v1/bulk-refreshes", json={"site_code": "PS1", "package_classes": ["SMS_TaskSequencePackage"]}
        )
        assert ts.status_code == 422
        for route, body in (
            ("/v1/bulk-refreshes", {"site_code": "PS1", "package_classes": ["SMS_Package", "SMS_ContentPackage"]}),
            ("/v1/refreshes", {"packages": [{**PACKAGE, "package_class": "SMS_ContentPackage"}]}),
        ):
            refused = client.post(route, json=body)
            assert refused.status_code == 422, route
            (problem,) = refused.json()["detail"]
            assert "deployment type" in problem["msg"] and "verified" in problem["msg"], problem
        unknown = f"bulk-{'0' * 32}"
        assert client.get(f"/v1/bulk-refreshes/{unknown}").status_code == 404
        assert client.post(f"/v1/bulk-refreshes/{unknown}/cancel").status_code == 404
        for not_an_id in ("no-such-bulk", "PS1", "null", f"bulk-{'A' * 32}"):
            assert client.get(f"/v1/bulk-refreshes/{not_an_id}").status_code == 422, not_an_id
        bad = client.get("/v1/bulk-refreshes/bad:id")
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "bulk_id"]
