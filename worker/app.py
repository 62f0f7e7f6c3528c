"""The Celery app: `celery -A worker.app worker` runs the refresh tasks.

At-least-once on Redis: acks late, reject on worker lost, prefetch 1, and one visibility
timeout that every countdown stays below. JSON only, so producers in any language
(celery-node, gocelery, the HTTP API in api/) speak the same contract. Task events are on for
Flower. The task names are worker/domain/task_names.py's (re-exported here).

No result backend: the outcome stream is the record of every request. A backend would only add
a second Redis dependency on the hot path (Celery stores STARTED before running a task, and a
failure to store it drops or wedges the request) and a second copy of results to keep clean.

Settings are read when the app is first configured, not at import, so a process can set its
environment (tests, the demo) before touching the app.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from config.broker import REDIS_SCHEMES
from config.settings import Settings
from worker.broker.transport import TRANSPORT, transport_options
from worker.domain.task_names import BULK_PUMP_TASK, BULK_TASK, REFRESH_TASK

__all__ = ["BULK_PUMP_TASK", "BULK_TASK", "REFRESH_TASK", "app", "celery_config", "create_app"]

# Imported by the worker at start: the tasks, the hooks into its life (pool settings, checks),
# then operations: the liveness probe task, and the log format hook (imported before Celery sets
# logging up, so JSON logs cover the worker's first line).
TASK_MODULES = [
    "tasks.refresh",
    "tasks.bulk",
    "worker.broker.connection_loss",
    "worker.lifecycle",
    "ops.health",
    "ops.logs",
]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours (pure: tests assert the invariants on it)."""
    visibility_timeout_s = settings.limits.visibility_timeout_s
    redis_transport = {
        "visibility_timeout": visibility_timeout_s,
        # kombu sweeps for unacked messages of dead workers every interval x throttle seconds
        # (100 s by default); scan every few seconds so a lost message returns soon after its
        # visibility timeout. The scan is one ZRANGE on the unacked index.
        "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 6)),
        "unacked_restore_throttle": 1,
        "socket_keepalive": True,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 10,
        "retry_on_timeout": True,
        **transport_options(prefix=settings.key_prefix, main_queue=settings.queue),
    }
    return {
        "broker_url": settings.broker_url,
        # Consumers move each message into an in-flight list instead of popping it, so a worker
        # killed while taking one cannot lose it (worker/broker/transport.py). Publishing is kombu's.
        # Settings refuse every other broker URL (config/broker.py): a second broker would choose
        # its own transport here, by scheme.
        "broker_transport": TRANSPORT if urlsplit(settings.broker_url).scheme in REDIS_SCHEMES else None,
        "broker_transport_options": redis_transport,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_pool_limit": 10,
        # A re-queue (Task.retry) or enqueue during a Redis restart keeps trying for ~1 minute
        # instead of Celery's default 3 quick tries: the re-queue is how a waiting request lives on.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A failed task has already published its final outcome (tasks/refresh.py never fails
        # without one), so its message is done. A hard time limit should never fire: the soft
        # limit re-queues first. On Redis a reject without requeue would drop it just the same.
        "task_acks_on_failure": True,
        "task_acks_on_timeout": True,
        "worker_prefetch_multiplier": 1,
        # ETA/countdown messages are held unacked in worker memory: cap them.
        "worker_eta_task_limit": 1000,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Celery's consumer, surviving a broker loss while messages are held (celery 5.7.0 bug).
        "worker_consumer": "worker.broker.connection_loss:Consumer",
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_default_queue": settings.queue,
        "task_routes": {"sccm.*": {"queue": settings.queue}},
        "task_track_started": False,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        # Each worker also consumes its own queue (<nodename>.dq2): the liveness probe
        # (`sccm-refresh health worker`) reaches exactly the worker it checks.
        "worker_direct": True,
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_app(settings: Settings | None = None) -> Celery:
    """A configured app; with no settings, they are read from the environment on first use."""
    celery = Celery("sccm_refresh", include=TASK_MODULES)
    if settings is not None:
        celery.conf.update(celery_config(settings))
    else:
        # A module name is imported lazily, when Celery first reads its configuration.
        celery.config_from_object("worker.celeryconfig")
    return celery


app = create_app()
