"""Process-wide objects of a worker, created on first use and resettable in one place.

Nothing here is built at import time: a prefork child builds its own after the fork (objects
inherited through fork() would share sockets with the parent), and a test can reset
everything with `reset_runtime()`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from config.broker import same_redis
from config.settings import Settings, get_settings
from worker.app import REFRESH_TASK, app
from worker.bulk_job import BulkRunner
from worker.provider import ProviderTransport, SccmClient
from worker.stores import (
    BulkStore,
    Coalescer,
    OutcomePublisher,
    ProviderSlots,
    RedisInvokeFences,
    RedisKeys,
    RequestWatch,
    redis_from_url,
)
from worker.stores.follow_snapshots import SiteSnapshots
from worker.stores.lease_keeper import lease_keeper
from worker.stores.redistribution_marks import RedisRedistributionMarks
from worker.usecase import DeliveryDeps

__all__ = [
    "bulk_runner",
    "client_for",
    "delivery_deps",
    "dispatch_refreshes",
    "follow_snapshots_for",
    "mark_worker_seen",
    "provider_slots",
    "publisher",
    "resend_overdue",
    "reset_runtime",
    "worker_identity",
]

log = logging.getLogger(__name__)

# A slot's typical hold before the first releases teach the estimate: one Get plus one Invoke.
_INITIAL_SLOT_HOLD_S = 1.0


class _Runtime:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clients: dict[str, SccmClient] = {}
        self.snapshots: dict[str, SiteSnapshots] = {}
        self.publisher: OutcomePublisher | None = None
        self.deps: DeliveryDeps | None = None
        self.bulk_runner: BulkRunner | None = None
        self.pid = os.getpid()

    def check_fork(self) -> None:
        if self.pid != os.getpid():
            self.clients = {}
            self.snapshots = {}
            self.publisher = None
            self.deps = None
            self.bulk_runner = None
            self.pid = os.getpid()


_runtime = _Runtime()


def client_for(site_code: str) -> SccmClient:
    """The SMS Provider client for a site (its transport keeps one WinRM session per thread)."""
    with _runtime.lock:
        _runtime.check_fork()
        client = _runtime.clients.get(site_code)
        if client is None:
            settings = get_settings()
            transport = ProviderTransport(site_code, settings.provider(site_code))
            client = SccmClient(transport, site_code, settings.retry.in_call)
            _runtime.clients[site_code] = client
        return client


def follow_snapshots_for(site_code: str) -> SiteSnapshots:
    """The per-site snapshot reader of requests followed to every DP (one per site and process)."""
    with _runtime.lock:
        _runtime.check_fork()
        reader = _runtime.snapshots.get(site_code)
        if reader is None:
            settings, writer = get_settings(), publisher()
            reader = SiteSnapshots(writer.redis, writer.keys, site_code, client_for(site_code), policy=settings.follow)
            _runtime.snapshots[site_code] = reader
        return reader


def publisher() -> OutcomePublisher:
    with _runtime.lock:
        _runtime.check_fork()
        if _runtime.publisher is None:
            settings = get_settings()
            _runtime.publisher = OutcomePublisher(
                redis_from_url(settings.redis_url),
                RedisKeys(settings.key_prefix),
                stream_maxlen=settings.limits.stream_maxlen,
                final_marker_ttl_s=settings.limits.final_marker_ttl_s,
                retry_deadline_s=settings.limits.publish_deadline_s,
            )
        return _runtime.publisher


def delivery_deps(*, interruptions: tuple[type[BaseException], ...] = ()) -> DeliveryDeps:
    """The refresh use case's collaborators for this process (one Redis client shared with the writer)."""
    with _runtime.lock:
        _runtime.check_fork()
        if _runtime.deps is None:
            settings = get_settings()
            writer = publisher()
            ttl_s = settings.limits.final_marker_ttl_s
            _runtime.deps = DeliveryDeps(
                settings=settings,
                provider=client_for,
                finals=writer,
                fences=RedisInvokeFences(
                    writer.redis, writer.keys, ttl_s=ttl_s, max_hold_s=float(settings.task_time_limit_s)
                ),
                worker=worker_identity(),
                interruptions=interruptions,
                unavailable=(RedisError,),
                coalescer=Coalescer(writer.redis, writer.keys, publish_ttl_s=ttl_s),
                slots=provider_slots(settings),
                bulks=BulkStore(writer.redis, writer.keys, ttl_s=ttl_s),
                on_final=bulk_runner().child_ended,
                on_event=bulk_runner().child_progress,
                watch=RequestWatch(writer.redis, writer.keys),
                distribution=follow_snapshots_for if settings.follow.snapshot_s > 0 else None,
                redistributions=RedisRedistributionMarks(writer.redis, writer.keys),
            )
        return _runtime.deps


def provider_slots_of_process() -> ProviderSlots:
    """The slots store the refresh use case of this process uses."""
    slots = delivery_deps().slots
    assert isinstance(slots, ProviderSlots), "the worker's slots are the Redis store"
    return slots


def wakes_pushed_by_redis() -> bool:
    """Whether a release pushes a woken request's message itself (the broker's queues are in the outcome Redis)."""
    settings = get_settings()
    return same_redis(settings.broker_url, settings.redis_url)


def send_woken(payload: str) -> None:
    """Publish a woken request's message (the broker is not the outcome Redis: tasks/park.py)."""
    message = json.loads(payload)
    app.send_task(REFRESH_TASK, kwargs=message["kwargs"], task_id=message["task_id"], queue=get_settings().queue)


def sweep_slots() -> int:
    """Wake what lapsed leases freed, and woken requests whose message never came back (every site)."""
    settings = get_settings()
    slots = provider_slots_of_process()
    parked = 0
    for site_code, provider in settings.providers.items():
        parked += slots.sweep(site_code, provider.max_concurrency).parked
    return parked


def provider_slots(settings: Settings) -> ProviderSlots:
    limits = settings.limits
    writer = publisher()
    # A re-poll is a countdown: it never exceeds the longest countdown the broker allows.
    wait_max_s = min(limits.slot_wait_max_s, float(limits.max_countdown_s))
    return ProviderSlots(
        writer.redis,
        writer.keys,
        lease_s=limits.slot_lease_s,
        # Twice the longest re-poll is the floor; a busy worker may run a countdown late.
        waiter_ttl_s=4 * wait_max_s,
        min_retry_after_s=min(limits.slot_wait_min_s, wait_max_s),
        max_retry_after_s=wait_max_s,
        default_hold_s=_INITIAL_SLOT_HOLD_S,
        keeper=lease_keeper,
        publish_wake=send_woken,
    )


def bulk_runner() -> BulkRunner:
    """Bulk jobs' enumeration, pacing and accounting for this process."""
    with _runtime.lock:
        _runtime.check_fork()
        if _runtime.bulk_runner is None:
            settings = get_settings()
            writer = publisher()
            _runtime.bulk_runner = BulkRunner(
                settings=settings,
                store=BulkStore(writer.redis, writer.keys, ttl_s=settings.limits.final_marker_ttl_s),
                outcomes=writer,
                dispatch=dispatch_refreshes,
                worker=worker_identity(),
            )
        return _runtime.bulk_runner


# A worker missing from the sweeps for a day is forgotten by the "workers seen" set.
_WORKER_FORGOTTEN_AFTER_S = 86_400.0


def mark_worker_seen(node: str) -> None:
    """This worker is alive and sweeping, with these sites (what /metrics reports workers and slots by)."""
    writer = publisher()
    now = time.time()
    key = writer.keys.workers_seen
    sites: dict[FieldT, EncodableT] = {s: p.max_concurrency for s, p in get_settings().providers.items()}
    with writer.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {node: now})
        pipe.zremrangebyscore(key, "-inf", now - _WORKER_FORGOTTEN_AFTER_S)
        if sites:
            pipe.hset(writer.keys.sites, mapping=sites)
        pipe.execute()


def resend_overdue() -> int:
    """Send again the requests whose message vanished (one sweep of the request watch)."""
    settings = get_settings()
    writer = publisher()
    limits = settings.limits
    overdue = RequestWatch(writer.redis, writer.keys).overdue(
        next_within_s=limits.visibility_timeout_s + limits.watch_margin_s
    )
    for lost in overdue:
        log.warning("request %s was not seen when due (its message was lost): sent again", lost.request_id)
        app.send_task(REFRESH_TASK, kwargs=lost.kwargs, task_id=lost.task_id, queue=settings.queue)
    return len(overdue)


def dispatch_refreshes(requests: Sequence[Mapping[str, Any]]) -> None:
    """Send refresh requests (bulk children) to our queue over one producer connection."""

    queue = get_settings().queue
    with app.producer_or_acquire() as producer:
        for kwargs in requests:
            app.send_task(
                REFRESH_TASK, kwargs=dict(kwargs), task_id=kwargs["request_id"], queue=queue, producer=producer
            )


def reset_runtime() -> None:
    with _runtime.lock:
        for client in _runtime.clients.values():
            client.transport.close()
        _runtime.clients = {}
        _runtime.publisher = None
        _runtime.deps = None
        _runtime.bulk_runner = None


def worker_identity() -> str:
    """The "host:pid" an outcome names as its worker."""
    return f"{socket.gethostname()}:{os.getpid()}"
