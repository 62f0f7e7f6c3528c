"""When each task was sent to the broker, from Celery's `task-sent` events.

The project's Celery settings send a `task-sent` event with every message (`task_send_sent_event`),
from whichever process sends it: a bulk's children are sent by a worker, as its window refills.
The first event per task id is when that task first reached the broker; re-queues (slot waits)
send more under the same id and are ignored. Only `task.sent` events are subscribed to (kombu's
Redis fanout filters by pattern), so the listener costs little.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from celery import Celery
from celery.events.receiver import EventReceiver

__all__ = ["SentTimes"]

_READY_TIMEOUT_S: Final = 10.0
_JOIN_TIMEOUT_S: Final = 5.0


class _Receiver(EventReceiver):  # type: ignore[misc]  # Celery ships no type information
    """An event receiver that says when its subscription is live (events before that are lost)."""

    def __init__(self, *args: Any, ready: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ready = ready

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **kwargs: Any) -> None:
        self._ready.set()


class SentTimes:
    """`sent[task_id]` = the sender's wall-clock time (epoch s) of the task's first `task-sent` event."""

    def __init__(self, app: Celery) -> None:
        self.sent: dict[str, float] = {}
        self.error: BaseException | None = None
        self._connection = app.connection_for_read()
        ready = threading.Event()
        self._receiver = _Receiver(
            self._connection, handlers={"task-sent": self._on_sent}, routing_key="task.sent", app=app, ready=ready
        )
        self._thread = threading.Thread(target=self._run, name="sent-events", daemon=True)
        self._thread.start()
        if not ready.wait(_READY_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"no event subscription within {_READY_TIMEOUT_S:.0f} s: {self.error!r}")

    def _on_sent(self, event: dict[str, Any]) -> None:
        self.sent.setdefault(str(event["uuid"]), float(event["timestamp"]))

    def _run(self) -> None:
        try:
            self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(_JOIN_TIMEOUT_S)
        self._connection.release()

    def __enter__(self) -> SentTimes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
