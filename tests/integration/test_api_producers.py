"""The API's refresh publisher on a real Redis: pushed in order, markers read beside the push, failures named."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from api.producers import BrokerUnavailableError, Producers, Published, api_celery_app
from api.redis_async import async_redis
from config.settings import Settings
from producers.enqueue import stamp_refresh
from testing.fixtures_redis import RedisServerFactory
from worker.domain.request import RefreshRequest
from worker.stores.keys import RedisKeys

pytestmark = pytest.mark.integration

QUEUE = "q-producers"
_T = TypeVar("_T")


def _requests(*package_ids: str) -> list[RefreshRequest]:
    return [
        stamp_refresh(RefreshRequest.model_validate({"site_code": "PS1", "package_id": package_id}))
        for package_id in package_ids
    ]


Act = Callable[[Producers, AsyncRedis, RedisKeys], Awaitable[_T]]


def _publish_with(redis_url: str, broker_url: str, act: Act[_T], *, max_concurrency: int | None = None) -> _T:
    """Run `act` with Producers wired as the API wires them (the broker client shared when the URLs match).

    With `max_concurrency`, the settings name site PS1's provider with that cap, as the workers' do.
    """
    providers = (
        {}
        if max_concurrency is None
        else {
            "PS1": {
                "endpoint": "http://sccm.example:5985/wsman",
                "username": "u",
                "password": "p",
                "allow_unencrypted": True,
                "max_concurrency": max_concurrency,
            }
        }
    )
    settings = Settings(
        broker_url=broker_url, redis_url=redis_url, queue=QUEUE, key_prefix="prod-test", providers=providers
    )

    async def run() -> _T:
        client = async_redis(redis_url, max_connections=4)
        broker = client if broker_url == redis_url else async_redis(broker_url, max_connections=2)
        celery = api_celery_app(settings)
        producers = Producers(celery, settings, anyio.CapacityLimiter(2), redis=client, broker=broker)
        try:
            return await act(producers, client, RedisKeys(settings.key_prefix))
        finally:
            await client.aclose()
            if broker is not client:
                await broker.aclose()
            celery.close()

    return asyncio.run(run())


def _queued_ids(url: str) -> list[str]:
    """Task ids in the order a worker takes them (from the right)."""
    client = redis.Redis.from_url(url)
    try:
        raw = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    return [json.loads(message)["headers"]["id"] for message in reversed(raw)]


def test_requests_are_queued_in_order_and_the_markers_set_before_the_push_are_read(redis_url: str) -> None:
    """Same Redis for broker and markers: one pipeline; the peek reports the leader, None where unset."""
    requests = _requests("PS100001", "PS100002", "PS100003")

    async def act(producers: Producers, client: AsyncRedis, keys: RedisKeys) -> Published:
        await client.set(keys.coalesce_leader("PS1", "PS100002"), "req-leader")
        peek = [keys.coalesce_leader(r.site_code, r.package_id) for r in requests]
        return await producers.enqueue_refreshes(requests, peek=peek)

    published = _publish_with(redis_url, redis_url, act)
    assert published.requests == requests
    assert published.peeked == [None, "req-leader", None]
    assert _queued_ids(redis_url) == [r.request_id for r in requests]


def test_with_a_separate_broker_the_push_goes_there_and_the_peek_reads_the_api_redis(
    redis_url: str, redis_server_factory: RedisServerFactory
) -> None:
    """Broker on its own server: messages land on the broker's queue only; markers come from Redis."""
    broker_url = redis_server_factory().url
    requests = _requests("PS100004")

    async def act(producers: Producers, client: AsyncRedis, keys: RedisKeys) -> Published:
        await client.set(keys.coalesce_leader("PS1", "PS100004"), "req-other")
        return await producers.enqueue_refreshes(requests, peek=[keys.coalesce_leader("PS1", "PS100004")])

    published = _publish_with(redis_url, broker_url, act)
    assert published.peeked == ["req-other"]
    assert _queued_ids(broker_url) == [requests[0].request_id]
    assert _queued_ids(redis_url) == []


def test_a_queue_the_broker_cannot_push_to_is_broker_unavailable_and_nothing_is_reported_sent(
    redis_url: str,
) -> None:
    """The queue key holds a string (WRONGTYPE): BrokerUnavailableError(0), not a partial success."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(QUEUE, "not a list")
    finally:
        client.close()

    async def act(producers: Producers, _client: AsyncRedis, keys: RedisKeys) -> BrokerUnavailableError | None:
        try:
            await producers.enqueue_refreshes(_requests("PS100005"), peek=[keys.coalesce_leader("PS1", "PS100005")])
        except BrokerUnavailableError as exc:
            return exc
        return None

    failure = _publish_with(redis_url, redis_url, act)
    assert isinstance(failure, BrokerUnavailableError) and failure.sent == 0


def test_the_pushed_message_carries_the_validated_request_as_the_task_kwargs(redis_url: str) -> None:
    """What the worker will parse is the request as stamped: ids, site, package, requested_at."""
    requests = _requests("PS100006")

    async def act(producers: Producers, _client: AsyncRedis, _keys: RedisKeys) -> Published:
        return await producers.enqueue_refreshes(requests)

    _publish_with(redis_url, redis_url, act)
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.rpop(QUEUE)
    finally:
        client.close()
    assert isinstance(raw, bytes)
    args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert args == [] and kwargs == requests[0].model_dump(mode="json")


def test_with_the_sites_cap_known_a_burst_parks_beyond_the_free_slots_and_only_those_are_queued(
    redis_url: str,
) -> None:
    """Cap 2: the first two requests are queued (woken, each holding a slot), the third too (woken
    ahead of its slot: half the cap), the other two wait in the line."""
    requests = _requests(*(f"PS10000{i}" for i in range(1, 6)))

    async def act(producers: Producers, client: AsyncRedis, keys: RedisKeys) -> tuple[Published, int]:
        published = await producers.enqueue_refreshes(requests)
        parked = int(await client.hlen(keys.slot_keys("PS1").parked))
        return published, parked

    published, parked = _publish_with(redis_url, redis_url, act, max_concurrency=2)
    assert published.requests == requests
    assert _queued_ids(redis_url) == [r.request_id for r in requests[:3]]
    assert parked == 5  # two woken and one ahead (kept until their delivery claims the slot), two waiting
    client = redis.Redis.from_url(redis_url)
    try:
        (message,) = [json.loads(raw) for raw in client.lrange(QUEUE, -1, -1)]
    finally:
        client.close()
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs["retry_state"]["parked_at"] > 0
