"""The worker's consumer: Celery's own, with one teardown step made survivable.

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
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

__all__ = ["Consumer"]

log = logging.getLogger(__name__)


# Celery ships no type information: its Consumer is Any to mypy.
class Consumer(CeleryConsumer):  # type: ignore[misc]
    """`worker_consumer` for sccm-refresh: reconnects after a broker loss with unacked messages held."""

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
