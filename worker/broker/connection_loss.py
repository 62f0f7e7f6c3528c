"""The worker's consumer: Celery's own, with one teardown step made survivable; and per-pool settings.

celery 5.7.0's `Consumer.on_connection_error_after_connected` calls `connection.collect()`
and then, new in 5.7, `connection.close()`. When the lost channel held unacked messages (an
ETA/countdown task: every request waiting for its medium is one), the first close aborts while
draining the dead BRPOP, `collect()` releases the transport anyway, and the second close tries
to restore those messages through the released transport. That raises AttributeError
("'NoneType' object has no attribute 'hostname'", kombu redis `Channel._connparams`), which is
not a connection error: the worker logs "Unrecoverable error" and exits instead of reconnecting.
celery 5.6.3 only called `collect()`. tests/integration/test_chaos_redis_restart.py reproduces it.

Restoring cannot succeed at that moment anyway (the broker just went away): the messages stay
in Redis' unacked hash and come back after the visibility timeout, as with celery 5.6. So that
one failure of the second close is logged and swallowed, and Celery goes on to reconnect.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import worker_init
from celery.utils.deprecated import CPendingDeprecationWarning
from celery.worker.consumer import Consumer as CeleryConsumer

from config.broker import broker_url_problem, transport_options_problem

__all__ = ["Consumer", "settings_for_pool"]

log = logging.getLogger(__name__)

# sysexits EX_CONFIG, as for invalid settings (worker/celeryconfig.py).
_EXIT_CONFIG = 78


# Celery ships no type information: its Consumer is Any to mypy.
class Consumer(CeleryConsumer):  # type: ignore[misc]
    """`worker_consumer` for sccm-refresh: reconnects after a broker loss with unacked messages held."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A task that finishes after its broker connection was collected acks through a released
        # transport: kombu raises AttributeError ("'NoneType' object has no attribute 'hostname'")
        # from `ack_log_error`, which only tolerates the connection errors it is given, and the
        # worker died ("Unrecoverable error", seen by the chaos suite's Redis restart). Tolerated
        # as a connection error, the ack is logged as failed and the message comes back after the
        # visibility timeout, where its final outcome drops it.
        known: tuple[type[BaseException], ...] = tuple(getattr(self, "connection_errors", ()))
        self.connection_errors = (*known, AttributeError)

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        connection = self.connection
        if connection is not None:
            connection.close = _close_tolerating_released_transport(connection.close)
        super().on_connection_error_after_connected(exc)


def _close_tolerating_released_transport(close: Callable[[], Any]) -> Callable[[], None]:
    def close_after_collect() -> None:
        try:
            close()
        except AttributeError as exc:
            log.warning(
                "broker connection teardown could not restore unacked messages (%s); they stay in Redis "
                "and are redelivered after the visibility timeout",
                exc,
            )

    return close_after_collect


def settings_for_pool(pool_cls: object) -> dict[str, object]:
    """Celery settings that depend on the worker's pool.

    `worker_cancel_long_running_tasks_on_connection_loss` makes a worker kill its running late-ack
    tasks when the broker connection drops, so they are redelivered rather than finishing unacked.
    Only prefork can kill a job: the threads pool raises NotImplementedError for each running task
    and Celery logs every one with a traceback and the task's kwargs (about 21 per worker per
    Redis restart). There, the running tasks finish, their ack fails with the dead connection, and
    the broker redelivers them after the visibility timeout: the same end, without the noise
    (the invoke fence keeps the redelivery from refreshing twice).
    """
    can_kill = isinstance(pool_cls, type) and issubclass(pool_cls, PreforkPool)
    return {"worker_cancel_long_running_tasks_on_connection_loss": can_kill}


def _configure_for_pool(sender: object = None, **_: object) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    # worker_init comes before Celery resolves the pool's name ("threads") into its class.
    settings = settings_for_pool(get_implementation(getattr(sender, "pool_cls", None)))
    app.conf.update(settings)
    if not settings["worker_cancel_long_running_tasks_on_connection_loss"]:
        # With the setting off, Celery warns on every reconnect that 6.0 will turn it on: once we
        # have chosen per pool, that warning is noise in the one line a restart should log.
        warnings.filterwarnings(
            "ignore", message=r"\s*In Celery 5\.1 we introduced", category=CPendingDeprecationWarning
        )


def _refuse_a_lossy_broker(sender: object = None, **_: object) -> None:
    """A broker configured in code past the settings' checks (config/broker.py) stops the worker at start.

    One line and exit 78, as for invalid settings: a worker on kombu's BRPOP path would run, and
    lose the message of any worker killed while taking one.
    """
    conf = getattr(getattr(sender, "app", None), "conf", None)
    if conf is None:
        return
    problem = broker_url_problem(str(conf.broker_url or "")) or transport_options_problem(
        conf.broker_transport_options or {}
    )
    if problem is not None:
        print(f"sccm-refresh: error: broker: {problem}", file=sys.stderr)
        raise SystemExit(_EXIT_CONFIG)


worker_init.connect(_refuse_a_lossy_broker, weak=False)
worker_init.connect(_configure_for_pool, weak=False)
