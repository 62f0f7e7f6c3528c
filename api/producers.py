"""The producer calls the API delegates to, run in a bounded thread pool.

Celery's `send_task` (and the bulk producer's Redis writes) block; they run in worker threads
under one anyio CapacityLimiter (`api.producer_threads`), which also caps how many are in
flight: a burst of POSTs waits for a thread instead of growing one per request. The API's
Celery app gives up publishing after about a second (not the workers' minute of retries), so a
broker outage is a quick 503 rather than a hung request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import anyio
from anyio import CapacityLimiter
from celery import Celery
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from config.settings import Settings
from tasks.enqueue import enqueue_refresh
from worker.app import create_app
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
    def __init__(self, celery: Celery, settings: Settings, limiter: CapacityLimiter) -> None:
        self._celery = celery
        self._settings = settings
        self._limiter = limiter

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
