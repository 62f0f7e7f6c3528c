"""The following gauges of /metrics against a real redis-server: the outcome writer's per-site counters.

Followed requests' outcomes are published with the real `OutcomePublisher` (its Lua script keeps
the counters); `api.metrics.read_snapshot` reads them back as /metrics does and `render` writes
the Prometheus text, parsed again with prometheus-client.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis as AsyncRedis

from api.metrics import OTHER_DPS, STRAGGLER_DP_LABELS, MetricsSnapshot, read_snapshot, render
from config.settings import Settings
from worker.domain.follow import COUNT_KEYS
from worker.domain.outcomes import AttemptInfo, Outcome, RequestInfo
from worker.stores.keys import RedisKeys
from worker.stores.outcome_writer import FOLLOW_SHARE_GRACE_S, OutcomePublisher

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SITE = "PS1"


def _row(dp: str, status: str) -> dict[str, Any]:
    return {
        "dp": dp,
        "nal_path": f'["Display=\\\\{dp}\\"]MSWNET:["SMS_SITE={SITE}"]\\\\{dp}\\',
        "status": status,
        "state": 0 if status == "done" else 2,
        "source_version": 4 if status == "done" else 3,
        "message_id": None,
        "message_at": None,
    }


def _followed(
    request_id: str,
    status: str,
    rows: dict[str, str],
    *,
    phase: str = "dps",
    poll: int = 1,
    deadline_at: str = "2026-05-02T12:00:00.000Z",
) -> Outcome:
    """A followed request's event: `rows` maps each target DP to its row status."""
    counts: dict[str, int] = dict.fromkeys(COUNT_KEYS, 0)
    for row_status in rows.values():
        counts[row_status] += 1
    final = status != "distributing"
    block = {
        "phase": phase,
        "targets": len(rows),
        "counts": counts,
        "dps": [_row(dp, s) for dp, s in rows.items()] if phase == "dps" else [],
        "dps_omitted": 0,
        "following_since": "2026-05-01T12:00:00.000Z",
        "deadline_at": deadline_at,
        "next_poll_at": None if final else "2026-05-01T12:05:00.000Z",
        "polls": poll,
    }
    started = T0 + timedelta(minutes=poll)
    run = AttemptInfo(1, 1, started, started + timedelta(seconds=1), "worker-1:4242")
    request = RequestInfo(request_id, SITE, "SMS_Package", "PS100012", T0)
    return Outcome.following(
        request, run, status, block, source_version_before=3, source_version_after=4 if phase == "dps" else None
    )


def _snapshot(url: str, keys: RedisKeys) -> MetricsSnapshot:
    async def read() -> MetricsSnapshot:
        client = AsyncRedis.from_url(url, decode_responses=True, protocol=2)
        try:
            return await read_snapshot(Settings(redis_url=url, broker_url=url), keys, client, None)
        finally:
            await client.aclose()

    return asyncio.run(read())


def _gauges(snapshot: MetricsSnapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(render(snapshot).decode()):
        if family.name.startswith("sccm_refresh_follow_"):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _targets(state: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("sccm_refresh_follow_targets", (("site", SITE), ("state", state)))


def _stragglers(dp: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("sccm_refresh_follow_stragglers", (("dp", dp), ("site", SITE)))


def test_targets_and_stragglers_follow_each_requests_latest_event_and_leave_with_its_final(
    redis_client: redis.Redis, redis_keys: RedisKeys, redis_url: str
) -> None:
    """Two followed requests: the counts sum their latest events (a redelivery counts once); a final takes its share."""
    redis_client.hset(redis_keys.sites, SITE, 3)
    publisher = OutcomePublisher(redis_client, redis_keys)
    publisher.publish(_followed("req-a", "distributing", {"DP01": "waiting", "DP02": "waiting"}, phase="source"))
    publisher.publish(_followed("req-b", "distributing", {"DP01": "done", "DP02": "retrying", "DP03": "failed"}))
    gauges = _gauges(_snapshot(redis_url, redis_keys))
    assert gauges[("sccm_refresh_follow_requests", (("site", SITE),))] == 2
    assert (gauges[_targets("waiting")], gauges[_targets("done")], gauges[_targets("failed")]) == (2, 1, 1)
    # Phase source: no copy started, so req-a's DPs are not stragglers yet.
    assert {key: value for key, value in gauges.items() if key[0] == "sccm_refresh_follow_stragglers"} == {
        _stragglers("DP02"): 1,
        _stragglers("DP03"): 1,
    }

    moved = _followed("req-a", "distributing", {"DP01": "done", "DP02": "waiting"}, poll=2)
    publisher.publish(moved)
    publisher.publish(moved)  # a redelivered event replaces the request's share, never adds to it
    gauges = _gauges(_snapshot(redis_url, redis_keys))
    assert (gauges[_targets("waiting")], gauges[_targets("done")], gauges[_targets("retrying")]) == (1, 2, 1)
    assert gauges[_stragglers("DP02")] == 2 and gauges[_stragglers("DP03")] == 1

    publisher.publish(
        _followed("req-b", "distributed_with_failures", {"DP01": "done", "DP02": "done", "DP03": "failed"})
    )
    publisher.publish(_followed("req-b", "distributing", {"DP01": "done", "DP02": "done", "DP03": "waiting"}, poll=9))
    gauges = _gauges(_snapshot(redis_url, redis_keys))
    assert gauges[("sccm_refresh_follow_requests", (("site", SITE),))] == 1
    assert {state: gauges[_targets(state)] for state in COUNT_KEYS} == {
        "done": 1,
        "waiting": 1,
        "retrying": 0,
        "failed": 0,
        "unknown": 0,
        "removed": 0,
    }
    assert {key: value for key, value in gauges.items() if key[0] == "sccm_refresh_follow_stragglers"} == {
        _stragglers("DP02"): 1
    }

    publisher.publish(_followed("req-a", "distributed", {"DP01": "done", "DP02": "done"}, poll=3))
    gauges = _gauges(_snapshot(redis_url, redis_keys))
    assert gauges[("sccm_refresh_follow_requests", (("site", SITE),))] == 0
    assert all(gauges[_targets(state)] == 0 for state in COUNT_KEYS)
    assert redis_client.hlen(redis_keys.follow_metrics(SITE).stragglers) == 0


def test_straggler_dp_labels_are_capped_per_site_with_the_rest_summed(
    redis_client: redis.Redis, redis_keys: RedisKeys, redis_url: str
) -> None:
    """More DPs holding requests back than STRAGGLER_DP_LABELS: the most-held ones by name, the rest as _other."""
    redis_client.hset(redis_keys.sites, SITE, 3)
    publisher = OutcomePublisher(redis_client, redis_keys)
    extra = 5
    dps = [f"DP{n:03d}" for n in range(STRAGGLER_DP_LABELS + extra)]
    publisher.publish(_followed("req-wide", "distributing", dict.fromkeys(dps, "waiting")))
    publisher.publish(_followed("req-narrow", "distributing", {dps[-1]: "retrying"}))
    stragglers = {
        dict(labels)["dp"]: value
        for (name, labels), value in _gauges(_snapshot(redis_url, redis_keys)).items()
        if name == "sccm_refresh_follow_stragglers"
    }
    assert len(stragglers) == STRAGGLER_DP_LABELS + 1
    assert stragglers[dps[-1]] == 2  # held back two requests: ranked first
    assert stragglers[OTHER_DPS] == extra
    assert sum(stragglers.values()) == len(dps) + 1


def test_a_share_long_past_its_deadline_is_dropped_by_the_sites_next_followed_event(
    redis_client: redis.Redis, redis_keys: RedisKeys, redis_url: str
) -> None:
    """A followed request that publishes nothing more (no final) stops counting an hour after its deadline."""
    redis_client.hset(redis_keys.sites, SITE, 3)
    publisher = OutcomePublisher(redis_client, redis_keys)
    publisher.publish(_followed("req-lost", "distributing", {"DP01": "failed"}, deadline_at="2026-05-01T12:10:00.000Z"))
    assert FOLLOW_SHARE_GRACE_S == 3600.0  # the poll times below are minutes after T0 (12:00)
    publisher.publish(_followed("req-next", "distributing", {"DP02": "waiting"}, poll=60))
    assert redis_client.hexists(redis_keys.follow_metrics(SITE).live, "req-lost")  # 12:10 + 1 h not passed yet
    publisher.publish(_followed("req-next", "distributing", {"DP02": "done"}, poll=75))
    gauges = _gauges(_snapshot(redis_url, redis_keys))
    assert gauges[("sccm_refresh_follow_requests", (("site", SITE),))] == 1
    assert (gauges[_targets("failed")], gauges[_targets("done")]) == (0, 1)
    assert not [key for key in gauges if key[0] == "sccm_refresh_follow_stragglers"]
    assert redis_client.zcard(redis_keys.follow_metrics(SITE).due) == 1
