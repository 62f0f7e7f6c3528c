"""`GET /metrics`: what Flower cannot show, in Prometheus' text format (prometheus-client).

Every number comes from a counter or a small structure the workers keep up to date, read with
one pipelined round trip to each Redis: reading metrics never scans the outcome stream, whatever
its length.

    sccm_refresh_queue_depth{queue}                     messages waiting: our queue, and our tasks
                                                        misrouted to Celery's default queue
    sccm_refresh_messages_unacked                       messages delivered but not acknowledged
                                                        (running, or held for a countdown)
    sccm_refresh_outcomes_total{status,site}            outcome events published
    sccm_refresh_errors_total{kind,phase}               errors by kind, `retrying` or `final`
    sccm_refresh_request_latency_seconds                request to final outcome (histogram)
    sccm_refresh_provider_slots_in_use{site}            WS-Man operations holding a slot now
    sccm_refresh_provider_slots_waiting{site}           requests waiting for a slot
    sccm_refresh_provider_slots_limit{site}             the site's max_concurrency
    sccm_refresh_bulk_jobs{state}                       bulk jobs in each state
    sccm_refresh_follow_requests{site}                  requests being followed to every DP now
    sccm_refresh_follow_targets{site,state}             their target DPs by row status (done, waiting,
                                                        retrying, failed, unknown, removed)
    sccm_refresh_follow_stragglers{site,dp}             followed requests each DP holds back (its row
                                                        not done at V1); the STRAGGLER_DP_LABELS DPs
                                                        with most per site, the rest summed as dp="_other"
    sccm_refresh_workers_seen                           workers that swept within the last minute
    sccm_refresh_api_tokens                             tokens this API process accepts
    sccm_refresh_api_token_file_ok                      0 while the token file's version is bad

The following gauges come from counters the outcome writer keeps per site from each followed
request's latest event (worker/stores/outcome_writer.lua): a request's share leaves with its final
(or an hour past its following deadline, should none come).
A DP counts as a straggler only where a request's event lists its row (FOLLOW__MAX_DP_ROWS rows,
stragglers first).

Behind the API's authentication like the `/v1` routes (role `read`). The last two are this
process's own (every other number is the same from every API process).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.asyncio import Redis as AsyncRedis

from config.settings import Settings
from worker.broker.misrouting import DEFAULT_CELERY_QUEUE, SAMPLE, misrouted_in
from worker.domain.follow import COUNT_KEYS
from worker.stores.keys import RedisKeys
from worker.stores.outcome_writer import LATENCY_BUCKET_INF, LATENCY_BUCKETS_S
from worker.stores.slots import OCCUPANCY_READS, occupancy_from, queue_occupancy_reads

__all__ = [
    "CONTENT_TYPE",
    "OTHER_DPS",
    "STRAGGLER_DP_LABELS",
    "MetricsSnapshot",
    "capped_dps",
    "read_snapshot",
    "render",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_UNACKED_HASH: Final = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged
_WORKER_SEEN_WITHIN_S: Final = 60.0
# A site may have thousands of DPs: at most this many `dp` label values per site (the DPs holding
# back the most requests), the rest summed under OTHER_DPS, so the series stay bounded.
STRAGGLER_DP_LABELS: Final = 20
OTHER_DPS: Final = "_other"
_FOLLOW_READS: Final = 3  # per site: HLEN live, HGETALL targets, HGETALL stragglers


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything /metrics shows, read at one moment."""

    queue_depth: dict[str, int] = field(default_factory=dict)
    unacked: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # "<status>|<site>" -> count
    errors: dict[str, int] = field(default_factory=dict)  # "<kind>|<phase>" -> count
    latency: dict[str, str] = field(default_factory=dict)  # "le:<b>" -> count, "sum", "count"
    slots: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # site -> in use, waiting, limit
    bulk_jobs: dict[str, int] = field(default_factory=dict)
    # site -> (requests followed, targets by row status, stragglers by DP capped at STRAGGLER_DP_LABELS)
    following: dict[str, tuple[int, dict[str, int], dict[str, int]]] = field(default_factory=dict)
    workers_seen: int = 0
    tokens: int | None = None  # this process's token file: tokens accepted, and whether its version is good
    token_file_ok: bool | None = None


async def read_snapshot(
    settings: Settings, keys: RedisKeys, outcomes_redis: AsyncRedis, broker_redis: AsyncRedis | None
) -> MetricsSnapshot:
    """Three round trips: the sites, then one pipeline to the outcome Redis and one to the broker."""
    now = time.time()
    # The sites the workers report (with their caps), and any this process knows of itself.
    limits = {site: provider.max_concurrency for site, provider in settings.providers.items()}
    limits |= {_text(site): int(limit) for site, limit in (await outcomes_redis.hgetall(keys.sites)).items()}
    sites = sorted(limits)
    outcome_key, error_key, latency_key = keys.metrics
    async with outcomes_redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(outcome_key)
        pipe.hgetall(error_key)
        pipe.hgetall(latency_key)
        pipe.hgetall(keys.bulk_states)
        pipe.zcount(keys.workers_seen, now - _WORKER_SEEN_WITHIN_S, "+inf")
        for site in sites:
            queue_occupancy_reads(pipe, keys, site, now_s=now)
        for site in sites:
            follow = keys.follow_metrics(site)
            pipe.hlen(follow.live)
            pipe.hgetall(follow.targets)
            pipe.hgetall(follow.stragglers)
        replies = await pipe.execute()
    outcomes, errors, latency, bulk_jobs, workers_seen = replies[:5]
    slot_replies = replies[5 : 5 + len(sites) * OCCUPANCY_READS]
    follow_replies = replies[5 + len(sites) * OCCUPANCY_READS :]
    slots: dict[str, tuple[int, int, int]] = {}
    following: dict[str, tuple[int, dict[str, int], dict[str, int]]] = {}
    for i, site in enumerate(sites):
        occupancy = occupancy_from(slot_replies[i * OCCUPANCY_READS : (i + 1) * OCCUPANCY_READS])
        slots[site] = (occupancy.in_use, occupancy.waiting, limits[site])
        followed, targets, stragglers = follow_replies[i * _FOLLOW_READS : (i + 1) * _FOLLOW_READS]
        following[site] = (int(followed), _ints(targets), capped_dps(_ints(stragglers)))
    queue_depth: dict[str, int] = {}
    unacked = 0
    if broker_redis is not None:
        async with broker_redis.pipeline(transaction=False) as pipe:
            pipe.llen(settings.queue)
            pipe.llen(DEFAULT_CELERY_QUEUE)
            pipe.lrange(DEFAULT_CELERY_QUEUE, 0, SAMPLE - 1)
            pipe.hlen(_UNACKED_HASH)
            ours, default_length, default_items, unacked = await pipe.execute()
        queue_depth[settings.queue] = int(ours)
        if settings.queue != DEFAULT_CELERY_QUEUE:
            queue_depth[DEFAULT_CELERY_QUEUE] = misrouted_in(
                DEFAULT_CELERY_QUEUE, int(default_length), list(default_items)
            ).estimated_ours
    return MetricsSnapshot(
        queue_depth=queue_depth,
        unacked=int(unacked),
        outcomes=_ints(outcomes),
        errors=_ints(errors),
        latency={_text(k): _text(v) for k, v in latency.items()},
        slots=slots,
        bulk_jobs=_ints(bulk_jobs),
        following=following,
        workers_seen=int(workers_seen),
    )


def capped_dps(stragglers: Mapping[str, int]) -> dict[str, int]:
    """At most STRAGGLER_DP_LABELS DPs (most requests held back first, then by name), the rest as OTHER_DPS."""
    ranked = sorted(((count, dp) for dp, count in stragglers.items() if count > 0), key=lambda c: (-c[0], c[1]))
    kept = {dp: count for count, dp in ranked[:STRAGGLER_DP_LABELS]}
    rest = sum(count for count, _dp in ranked[STRAGGLER_DP_LABELS:])
    if rest:
        kept[OTHER_DPS] = rest
    return kept


def render(snapshot: MetricsSnapshot) -> bytes:
    """The snapshot in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneShot(snapshot))
    return generate_latest(registry)


class _OneShot:
    """A collector that reports one snapshot (a fresh registry per scrape: nothing kept in memory)."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot
        depth = GaugeMetricFamily("sccm_refresh_queue_depth", "Messages waiting in a queue", labels=["queue"])
        for queue, count in sorted(snap.queue_depth.items()):
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily(
            "sccm_refresh_messages_unacked", "Messages delivered, not yet acknowledged", value=snap.unacked
        )
        outcomes = CounterMetricFamily("sccm_refresh_outcomes", "Outcome events published", labels=["status", "site"])
        for key, count in sorted(snap.outcomes.items()):
            status, _, site = key.partition("|")
            outcomes.add_metric([status, site], count)
        yield outcomes
        errors = CounterMetricFamily("sccm_refresh_errors", "Errors by kind and phase", labels=["kind", "phase"])
        for key, count in sorted(snap.errors.items()):
            kind, _, phase = key.partition("|")
            errors.add_metric([kind, phase], count)
        yield errors
        yield _latency(snap.latency)
        for name, index, text in (
            ("sccm_refresh_provider_slots_in_use", 0, "WS-Man operations holding a provider slot"),
            ("sccm_refresh_provider_slots_waiting", 1, "Requests waiting for a provider slot"),
            ("sccm_refresh_provider_slots_limit", 2, "The site's max_concurrency"),
        ):
            gauge = GaugeMetricFamily(name, text, labels=["site"])
            for site, values in sorted(snap.slots.items()):
                gauge.add_metric([site], values[index])
            yield gauge
        bulks = GaugeMetricFamily("sccm_refresh_bulk_jobs", "Bulk jobs in each state", labels=["state"])
        for state, count in sorted(snap.bulk_jobs.items()):
            bulks.add_metric([state], count)
        yield bulks
        yield from _following(snap.following)
        yield GaugeMetricFamily(
            "sccm_refresh_workers_seen", "Workers that swept within the last minute", value=snap.workers_seen
        )
        if snap.tokens is not None:
            yield GaugeMetricFamily("sccm_refresh_api_tokens", "Tokens this API process accepts", value=snap.tokens)
        if snap.token_file_ok is not None:
            yield GaugeMetricFamily(
                "sccm_refresh_api_token_file_ok",
                "1 when the token file's current version is good, 0 while it is bad (see the server log)",
                value=int(snap.token_file_ok),
            )


def _following(following: Mapping[str, tuple[int, dict[str, int], dict[str, int]]]) -> Iterator[Metric]:
    requests = GaugeMetricFamily(
        "sccm_refresh_follow_requests", "Requests being followed to every DP (until=distributed)", labels=["site"]
    )
    targets = GaugeMetricFamily(
        "sccm_refresh_follow_targets", "Target DPs of the followed requests by row status", labels=["site", "state"]
    )
    stragglers = GaugeMetricFamily(
        "sccm_refresh_follow_stragglers",
        f"Followed requests a DP holds back (not done at the new version); top {STRAGGLER_DP_LABELS} DPs per site,"
        f" the rest as dp={OTHER_DPS}",
        labels=["site", "dp"],
    )
    for site, (followed, by_state, by_dp) in sorted(following.items()):
        requests.add_metric([site], followed)
        for state in COUNT_KEYS:
            targets.add_metric([site, state], by_state.get(state, 0))
        for dp, count in by_dp.items():
            stragglers.add_metric([site, dp], count)
    yield requests
    yield targets
    yield stragglers


def _latency(raw: Mapping[str, str]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound in LATENCY_BUCKETS_S:
        cumulative += int(raw.get(f"le:{bound:g}", 0))
        buckets.append((f"{bound:g}", cumulative))
    cumulative += int(raw.get(LATENCY_BUCKET_INF, 0))
    buckets.append(("+Inf", cumulative))
    return HistogramMetricFamily(
        "sccm_refresh_request_latency_seconds",
        "From the request to its final outcome",
        buckets=buckets,
        sum_value=float(raw.get("sum", 0) or 0),
    )


def _ints(raw: Mapping[Any, Any]) -> dict[str, int]:
    return {_text(k): int(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
