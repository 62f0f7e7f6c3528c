"""The producer calls the API delegates to.

Refresh requests, on a Redis broker, are published without blocking: the Celery protocol 2
message is built here (tasks/celery_message.py) and pushed with one async LPUSH per POST. That
path is most of the API's traffic and Celery's `send_task` in a thread was most of its cost.
Everything else that blocks (the bulk producer's Redis writes and publish, or any publish on a
broker that is not Redis) runs in worker threads under one anyio CapacityLimiter
(`api.producer_threads`), which also caps how many are in flight. The API's Celery app gives up
publishing after about a second (not the workers' minute of retries), so a broker outage is a
quick 503 rather than a hung request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import anyio
from anyio import CapacityLimiter
from celery import Celery
from kombu.exceptions import KombuError
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from config.settings import Settings
from tasks.celery_message import task_message
from tasks.enqueue import enqueue_refresh, prepare_refresh
from worker.app import REFRESH_TASK, create_app
from worker.request import RefreshRequest

__all__ = ["BrokerUnavailableError", "Producers", "api_celery_app"]

_T = TypeVar("_T")
# Broker and Redis failures a producer call can end with (after its own short retries).
BROKER_ERRORS: Final = (KombuError, RedisError, OSError)
_PUBLISH_RETRY_POLICY: Final = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


class BrokerUnavailableError(Exception):
    """The broker (or Redis) did not take the work; `sent` items went out before it failed."""

    def __init__(self, sent: int) -> None:
        super().__init__(f"broker unavailable after {sent} item(s)")
        self.sent = sent


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
        self, celery: Celery, settings: Settings, limiter: CapacityLimiter, *, broker: AsyncRedis | None = None
    ) -> None:
        self._celery = celery
        self._settings = settings
        self._limiter = limiter
        # The broker's Redis, when the broker is Redis: refresh requests go there directly.
        self._broker = broker

    @property
    def celery(self) -> Celery:
        return self._celery

    async def run(self, call: Callable[[], _T]) -> _T:
        """Run a blocking producer call in the pool; broker failures become BrokerUnavailableError."""
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        except BROKER_ERRORS:
            raise BrokerUnavailableError(0) from None

    async def enqueue_refreshes(self, items: Sequence[dict[str, Any]]) -> list[RefreshRequest]:
        """Validate and stamp each item as `tasks.enqueue` does, then publish them all, in order."""
        if self._broker is not None:
            return await self._push_refreshes(items, self._broker)
        return await self._send_refreshes(items)

    async def _push_refreshes(self, items: Sequence[dict[str, Any]], broker: AsyncRedis) -> list[RefreshRequest]:
        queue = self._settings.queue
        requests = [prepare_refresh(**item) for item in items]
        messages = [
            task_message(REFRESH_TASK, str(request.request_id), request.model_dump(mode="json"), queue=queue)
            for request in requests
        ]
        try:
            # One LPUSH for the batch: the worker's BRPOP takes them in this order.
            await broker.lpush(queue, *messages)
        except RedisError:
            raise BrokerUnavailableError(0) from None
        return requests

    async def _send_refreshes(self, items: Sequence[dict[str, Any]]) -> list[RefreshRequest]:
        """`tasks.enqueue.enqueue_refresh` for each item, in order, in one pool thread."""
        queue = self._settings.queue

        def send_all() -> list[RefreshRequest]:
            sent: list[RefreshRequest] = []
            for item in items:
                try:
                    request, _ = enqueue_refresh(self._celery, queue=queue, **item)
                except BROKER_ERRORS:
                    raise BrokerUnavailableError(len(sent)) from None
                sent.append(request)
            return sent

        return await anyio.to_thread.run_sync(send_all, limiter=self._limiter)
