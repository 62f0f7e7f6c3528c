"""Hooks into the worker process's life (Celery signals): what runs once a worker is ready."""

from __future__ import annotations

import logging

from celery.signals import worker_ready

from config.settings import get_settings
from worker.misrouting import start_watch
from worker.redis_client import redis_from_url

__all__: list[str] = []

log = logging.getLogger(__name__)

# How often a worker looks for our messages in Celery's default queue.
MISROUTING_CHECK_INTERVAL_S = 300.0


def _watch_for_misrouted_messages(**_: object) -> None:
    settings = get_settings()
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return  # the check reads kombu's Redis lists; another broker has its own tools
    start_watch(redis_from_url(settings.broker_url), settings.queue, interval_s=MISROUTING_CHECK_INTERVAL_S)


worker_ready.connect(_watch_for_misrouted_messages, weak=False)
