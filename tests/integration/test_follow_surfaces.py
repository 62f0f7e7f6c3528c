"""What a user sees of a request followed to every DP: the API's routes, its SSE, /metrics and Flower.

One pipeline (real Redis, a real Celery worker, the emulator over HTTP) with copies slow enough
(1 s a DP, 3 s to the pull DP) that the following phase lasts seconds and polls every half
second, the HTTP API in front of it and our Flower watching its task events.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.models import RefreshDistribution
from testing.fixtures_api import (
    READ_TOKEN,
    SUBMIT_TOKEN,
    ApiServer,
    SseEvent,
    api_environment,
    iter_sse,
    write_token_file,
)
from testing.fixtures_pipeline import Pipeline, PipelineFactory, fast_follow_env
from testing.flower_process import FlowerProcess
from testing.waiting import wait_until
from worker.task_states import FOLLOWING_TO_DPS

pytestmark = pytest.mark.integration

_DEADLINE_S = 30.0
_SLOW_COPIES: dict[str, Any] = {"dp_copy_time_s": 1.0, "dp_retry_delay_s": 0.05, "dp_retry_count": 1}
_WAIT_S = _DEADLINE_S + 15


@dataclass
class Surfaces:
    pipeline: Pipeline
    api: ApiServer
    flower: FlowerProcess

    def follow_gauges(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with self.api.client(READ_TOKEN) as client:
            response = client.get("/metrics")
        assert response.status_code == 200, response.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            if family.name.startswith("sccm_refresh_follow_")
            for sample in family.samples
        }


@pytest.fixture(scope="module")
def surfaces(pipeline_factory: PipelineFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Surfaces]:
    tmp = tmp_path_factory.mktemp("follow-surfaces")
    pipeline = pipeline_factory(
        emulator_overrides={"BS1": _SLOW_COPIES}, worker_extra_env=fast_follow_env(_DEADLINE_S), concurrency=2
    )
    tokens = write_token_file(
        tmp / "tokens", {"svc-submit": (SUBMIT_TOKEN, "submit"), "svc-read": (READ_TOKEN, "read")}
    )
    env = api_environment(
        redis_url=pipeline.redis_url,
        key_prefix=pipeline.keys.prefix,
        queue=pipeline.queue,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens), "SCCM_REFRESH_API__EVENT_HEARTBEAT_S": "0.5"},
    )
    flower = FlowerProcess(pipeline.worker.env, log_file=tmp / "flower.log", auth_file=tmp / "flower-auth").start()
    try:
        with ApiServer(env, tmp / "api.log") as api:
            yield Surfaces(pipeline, api, flower)
    finally:
        flower.stop()


def _item(pkg: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"], **extra}


class _EventReader(threading.Thread):
    """Reads one request's outcome events over SSE until its final (or the deadline)."""

    def __init__(self, api: ApiServer, request_id: str, opened: threading.Event) -> None:
        super().__init__(daemon=True)
        self._api, self._request_id, self._opened = api, request_id, opened
        self.outcomes: list[dict[str, Any]] = []
        self.events: list[SseEvent] = []

    def run(self) -> None:
        with self._api.client(READ_TOKEN) as client:
            events = iter_sse(client, "/v1/events", params={"request_id": self._request_id}, deadline_s=_WAIT_S)
            next(events)  # the stream's start position is fixed: nothing published from now on is missed
            self._opened.set()
            for event in events:
                if event.event != "outcome" or event.data is None:
                    continue
                self.events.append(event)
                self.outcomes.append(json.loads(event.data))
                if self.outcomes[-1]["final"]:
                    return


def test_a_followed_request_shows_distributing_everywhere_then_its_final(surfaces: Surfaces) -> None:
    """SSE streams `distributing` before the final; meanwhile Flower shows FOLLOWING_TO_DPS with counts,
    /metrics counts the request and its targets, GET .../distribution its block; after it, the final's block."""
    pkg = surfaces.pipeline.package("BS1", pkg_source_flag=2, package_class="SMS_Package")
    request_id = f"svc-submit:follow-{pkg['PackageID'].lower()}"
    opened = threading.Event()
    reader = _EventReader(surfaces.api, request_id, opened)
    reader.start()
    assert opened.wait(10)
    with surfaces.api.client(SUBMIT_TOKEN) as client:
        response = client.post(
            "/v1/refreshes", json={"packages": [_item(pkg, until="distributed", request_id=request_id.split(":")[1])]}
        )
        assert response.status_code == 202, response.text
        assert response.json()["refreshes"][0]["request_id"] == request_id

        # While it is followed (3 s at least: the pull DP's copy): the gauges, the route, Flower's custom state.
        following = ("sccm_refresh_follow_requests", (("site", "BS1"),))
        scraped: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []

        def counted() -> bool:
            scraped.append(surfaces.follow_gauges())
            return scraped[-1].get(following) == 1

        assert wait_until(counted, timeout_s=10)
        targets = {labels: v for (name, labels), v in scraped[-1].items() if name == "sccm_refresh_follow_targets"}
        assert sum(targets.values()) == 5, targets
        midway = client.get(f"/v1/refreshes/{request_id}/distribution")
        assert midway.status_code == 200, midway.text
        assert midway.json()["status"] == "distributing" and midway.json()["final"] is False
        assert midway.json()["distribution"]["next_poll_at"] is not None
        RefreshDistribution.model_validate(midway.json())  # the documented shape, exactly (extra keys refused)
        seen: list[dict[str, Any]] = []

        def shown() -> bool:
            seen.append(surfaces.flower.task_info(request_id))
            return seen[-1].get("state") == FOLLOWING_TO_DPS

        assert wait_until(shown, timeout_s=_WAIT_S), seen[-1:]
        detail = str(seen[-1].get("result"))
        assert detail.startswith("following to every DP (") and "next poll" in detail, detail

        reader.join(_WAIT_S)
        statuses = [o["status"] for o in reader.outcomes]
        assert statuses and statuses[-1] == "distributed", statuses
        assert statuses.index("distributing") < len(statuses) - 1
        final = reader.outcomes[-1]

        read = client.get(f"/v1/refreshes/{request_id}/distribution")
        assert read.status_code == 200, read.text
        body = read.json()
        RefreshDistribution.model_validate(body)
        assert (body["status"], body["final"], body["stream_id"]) == ("distributed", True, reader.events[-1].id)
        assert (body["source_version_before"], body["source_version_after"]) == (
            pkg["SourceVersion"],
            pkg["SourceVersion"] + 1,
        )
        assert body["distribution"] == final["distribution"]
        assert body["distribution"]["counts"]["done"] == body["distribution"]["targets"] == 5
        state = client.get(f"/v1/refreshes/{request_id}")
        assert state.status_code == 200 and state.json()["outcome"]["distribution"] == final["distribution"]

    assert wait_until(lambda: surfaces.follow_gauges().get(following) == 0, timeout_s=10)
    gauges = surfaces.follow_gauges()
    assert gauges[("sccm_refresh_follow_targets", (("site", "BS1"), ("state", "waiting")))] == 0
    assert not [key for key in gauges if key[0] == "sccm_refresh_follow_stragglers"]
    assert wait_until(lambda: surfaces.flower.task_info(request_id).get("state") == "SUCCESS", timeout_s=15)


def test_distribution_of_a_request_not_followed_is_409_and_of_an_unknown_one_404(surfaces: Surfaces) -> None:
    """A request that ended `accepted` (until=accepted) has no distribution to show: 409 naming why; unknown: 404."""
    pkg = surfaces.pipeline.package("BS1", pkg_source_flag=2, package_class="SMS_Package")
    with surfaces.api.client(SUBMIT_TOKEN) as client:
        response = client.post("/v1/refreshes", json={"packages": [_item(pkg)]})
        assert response.status_code == 202, response.text
        request_id = response.json()["refreshes"][0]["request_id"]
        assert wait_until(lambda: request_id in surfaces.pipeline.finals(), timeout_s=_WAIT_S)
        refused = client.get(f"/v1/refreshes/{request_id}/distribution")
        assert refused.status_code == 409, refused.text
        assert "until=distributed" in refused.json()["detail"]
        unknown = client.get("/v1/refreshes/no-such-request/distribution")
        assert unknown.status_code == 404, unknown.text
