"""The producer calls the API delegates to.

Refresh requests, on a Redis broker, are published without blocking: the Celery protocol 2
message is built here (producers/celery_message.py) and pushed with one async LPUSH per POST. That
path is most of the API's traffic and Celery's `send_task` in a thread was most of its cost.
Keys the caller wants read at the same moment (`peek`: the coalescing markers) travel in the
same pipeline when the broker is the API's Redis: one round trip per POST, not two.
When the broker is the API's Redis and the workers' settings name the site (its provider cap),
a POST's single requests are not pushed onto the queue but parked in the site's line for a
provider slot (worker/stores/slots.py), in the same pipeline: as many as there are free slots
are woken at once (pushed onto the queue by the same script), the rest when releases free slots.
A burst is then delivered once per request, when its turn comes, instead of once to find no slot
free and again when woken. Everything else that blocks (the bulk producer's Redis writes and
publish, or any publish on a broker that is not Redis) runs in worker threads under one anyio CapacityLimiter
(`api.producer_threads`), which also caps how many are in flight. The API's Celery app gives up
publishing after about a second (not the workers' minute of retries), so a broker outage is a
quick 503 rather than a hung request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import anyio
from anyio import CapacityLimiter
from celery import Celery
from kombu.exceptions import KombuError
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from config.settings import Settings
from producers.celery_message import task_message
from producers.enqueue import send_refresh
from worker.app import REFRESH_TASK, create_app
from worker.domain.request import RETRY_STATE_KWARG, RefreshRequest
from worker.stores.keys import RedisKeys
from worker.stores.lua import script_source
from worker.stores.redis_full import is_redis_full
from worker.stores.slots import SCRIPT_NAME, park_many_call, push_wake
from worker.usecase.values import PRIORITY_SINGLE

__all__ = ["BrokerUnavailableError", "Producers", "Published", "api_celery_app"]

_T = TypeVar("_T")
# Broker and Redis failures a producer call can end with (after its own short retries).
BROKER_ERRORS: Final = (KombuError, RedisError, OSError)
_PUBLISH_RETRY_POLICY: Final = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


@dataclass(frozen=True)
class Published:
    """The requests sent, in order, and the peeked keys' values (None where unset or unread)."""

    requests: list[RefreshRequest]
    peeked: list[str | None]


class BrokerUnavailableError(Exception):
    """The broker (or Redis) did not take the work; `sent` items went out before it failed.

    `full`: it answered, but refused the write for lack of memory (maxmemory, noeviction).
    """

    def __init__(self, sent: int, *, full: bool = False) -> None:
        super().__init__(f"broker unavailable after {sent} item(s)")
        self.sent = sent
        self.full = full

    @classmethod
    def after(cls, sent: int, exc: BaseException) -> BrokerUnavailableError:
        return cls(sent, full=is_redis_full(exc))


def api_celery_app(settings: Settings) -> Celery:
    """A producer-only Celery app on our settings, failing fast when the broker is away.

    Celery's task-sent event (Flower's SENT state, before a worker reports RECEIVED) is a
    second Redis publish per request, a third of the cost of sending one: off unless
    `api.task_sent_events` asks for it.
    """
    app = create_app(settings)
    app.conf.task_publish_retry_policy = _PUBLISH_RETRY_POLICY
    app.conf.broker_connection_timeout = 2.0
    app.conf.task_send_sent_event = settings.api.task_sent_events
    return app


class Producers:
    def __init__(
        self,
        celery: Celery,
        settings: Settings,
        limiter: CapacityLimiter,
        *,
        redis: AsyncRedis,
        broker: AsyncRedis | None = None,
    ) -> None:
        self._celery = celery
        self._settings = settings
        self._limiter = limiter
        self._redis = redis  # where `peek` keys live
        # The broker's Redis, when the broker is Redis: refresh requests go there directly.
        self._broker = broker
        self._keys = RedisKeys(settings.key_prefix)
        self._slots = redis.register_script(script_source(SCRIPT_NAME))

    @property
    def celery(self) -> Celery:
        return self._celery

    async def run(self, call: Callable[[], _T]) -> _T:
        """Run a blocking producer call in the pool; broker failures become BrokerUnavailableError."""
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailableError.after(0, exc) from None

    async def enqueue_refreshes(self, requests: Sequence[RefreshRequest], *, peek: Sequence[str] = ()) -> Published:
        """Publish prepared requests (`producers.enqueue.stamp_refresh`), in order; read `peek` meanwhile.

        The read is advisory: a failed one gives None values rather than failing requests
        already enqueued.
        """
        if self._broker is not None and self._broker is self._redis:
            return await self._push_and_peek(requests, peek, self._broker)
        reading = asyncio.ensure_future(self._redis.mget(peek)) if peek else None
        try:
            if self._broker is not None:
                await self._push(requests, self._broker)
            else:
                await self._send(requests)
        except BaseException:
            if reading is not None:
                reading.cancel()
            raise
        try:
            peeked = await reading if reading is not None else []
        except RedisError:
            peeked = [None] * len(peek)
        return Published(list(requests), _texts(peeked))

    def _messages(self, requests: Sequence[RefreshRequest], *, parked_at: float | None = None) -> list[str]:
        queue = self._settings.queue
        extra = {} if parked_at is None else {RETRY_STATE_KWARG: {"parked_at": parked_at}}
        return [
            task_message(
                REFRESH_TASK, str(request.request_id), {**request.model_dump(mode="json"), **extra}, queue=queue
            )
            for request in requests
        ]

    async def _park(self, requests: Sequence[RefreshRequest], pipe: Pipeline) -> list[RefreshRequest]:
        """Queue on `pipe` the park of each request whose site's cap is known; the rest, to push."""
        by_site: dict[str, list[RefreshRequest]] = {}
        rest: list[RefreshRequest] = []
        for request in requests:
            if request.site_code in self._settings.providers:
                by_site.setdefault(request.site_code, []).append(request)
            else:
                rest.append(request)
        now = time.time()
        for site, parked in by_site.items():
            # Marked parked: a woken delivery that ends before it needs its slot gives it back.
            messages = self._messages(parked, parked_at=now)
            queue = self._settings.queue
            call = park_many_call(
                self._keys,
                site,
                self._settings.provider(site).max_concurrency,
                priority=PRIORITY_SINGLE,
                wakes=[(str(r.request_id), push_wake(queue, m)) for r, m in zip(parked, messages, strict=True)],
                lease_s=self._settings.limits.slot_lease_s,
            )
            await self._slots(keys=call.keys, args=call.args, client=pipe)
        return rest

    async def _push(self, requests: Sequence[RefreshRequest], broker: AsyncRedis) -> None:
        try:
            # One LPUSH for the batch: the worker takes them in this order.
            await broker.lpush(self._settings.queue, *self._messages(requests))
        except RedisError as exc:
            raise BrokerUnavailableError.after(0, exc) from None

    async def _push_and_peek(
        self, requests: Sequence[RefreshRequest], peek: Sequence[str], broker: AsyncRedis
    ) -> Published:
        # MGET first: it sees the markers as they were before these requests could be taken.
        pipe = broker.pipeline(transaction=False)
        if peek:
            pipe.mget(peek)
        rest = await self._park(requests, pipe)
        if rest:
            pipe.lpush(self._settings.queue, *self._messages(rest))
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise BrokerUnavailableError.after(0, exc) from None
        failed = next((reply for reply in replies[1 if peek else 0 :] if isinstance(reply, Exception)), None)
        if failed is not None:
            raise BrokerUnavailableError.after(0, failed)
        peeked = replies[0] if peek and not isinstance(replies[0], Exception) else [None] * len(peek)
        return Published(list(requests), _texts(peeked))

    async def _send(self, requests: Sequence[RefreshRequest]) -> None:
        """`producers.enqueue.send_refresh` for each request, in order, in one pool thread."""
        queue = self._settings.queue

        def send_all() -> None:
            for sent, request in enumerate(requests):
                try:
                    send_refresh(self._celery, request, queue=queue)
                except BROKER_ERRORS as exc:
                    raise BrokerUnavailableError.after(sent, exc) from None

        await anyio.to_thread.run_sync(send_all, limiter=self._limiter)


def _texts(values: Sequence[object]) -> list[str | None]:
    return [None if value is None else str(value) for value in values]
