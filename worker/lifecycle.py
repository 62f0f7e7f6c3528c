"""Hooks into the worker process's life (Celery signals): what runs once a worker is ready."""

from __future__ import annotations

import logging
import os
import threading

from celery.signals import worker_ready
from redis.exceptions import RedisError

from config.settings import get_settings
from worker.broker.misrouting import start_watch
from worker.runtime import mark_worker_seen, resend_overdue, sweep_slots
from worker.stores.redis_client import redis_from_url

__all__: list[str] = []

log = logging.getLogger(__name__)

# How often a worker looks for our messages in Celery's default queue.
MISROUTING_CHECK_INTERVAL_S = 300.0


def _watch_for_misrouted_messages(**_: object) -> None:
    settings = get_settings()
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return  # the check reads kombu's Redis lists; another broker has its own tools
    start_watch(redis_from_url(settings.broker_url), settings.queue, interval_s=MISROUTING_CHECK_INTERVAL_S)


def _sweep_for_lost_messages(sender: object = None, **_: object) -> None:
    """Every `watch_sweep_interval_s`, send again any live request whose message vanished.

    The same beat tells /metrics this worker is alive and consuming (the "workers seen" gauge).
    """
    interval_s = get_settings().limits.watch_sweep_interval_s
    node = str(getattr(sender, "hostname", None) or f"pid-{os.getpid()}")

    def loop() -> None:
        while True:
            try:
                mark_worker_seen(node)
                resend_overdue()
            except RedisError as exc:
                log.debug("request watch sweep skipped: %s", type(exc).__name__)
            except Exception as exc:  # a sweep must never kill its thread: log the type, go on
                log.error("request watch sweep failed (%s)", type(exc).__name__)
            stop.wait(interval_s)

    stop = threading.Event()
    threading.Thread(target=loop, name="sccm-request-watch", daemon=True).start()


def _sweep_provider_slots(**_: object) -> None:
    """Every `slot_sweep_interval_s`, hand out slots that lapsed leases freed (a holder died) and wake
    again the woken requests whose message never came back; releases do this too, but a site
    whose holders all died has none."""
    interval_s = get_settings().limits.slot_sweep_interval_s

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                sweep_slots()
            except RedisError as exc:
                log.debug("provider slot sweep skipped: %s", type(exc).__name__)
            except Exception as exc:  # a sweep must never kill its thread: log the type, go on
                log.error("provider slot sweep failed (%s)", type(exc).__name__)

    stop = threading.Event()
    threading.Thread(target=loop, name="sccm-slot-sweep", daemon=True).start()


worker_ready.connect(_watch_for_misrouted_messages, weak=False)
worker_ready.connect(_sweep_for_lost_messages, weak=False)
worker_ready.connect(_sweep_provider_slots, weak=False)
