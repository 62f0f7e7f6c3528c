"""The watch over live requests in memory: worker/stores/request_watch.py's RequestWatch without Redis.

The same rules as request_watch.lua: each delivery records when the next sign of its request is
due and the message to send again; a sweep returns the requests past due (earliest first) and
gives each a new deadline at once; `forget` drops a request that ended (what outcome_writer.lua
does in the script that records a final, and what a delivery does that finds the final recorded).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from worker.stores.request_watch import Overdue

__all__ = ["MemoryWatch"]

_MAX_SWEEP: Final = 200


class MemoryWatch:
    """Deadlines and messages in dicts; `now` is the clock when a call passes no `now_s`."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._deadlines: dict[str, float] = {}
        self._messages: dict[str, tuple[str, str]] = {}  # request id -> (task id, kwargs JSON)

    def expect(
        self, request_id: str, task_id: str, kwargs: Mapping[str, Any], *, within_s: float, now_s: float | None = None
    ) -> None:
        """A delivery of this request (these kwargs) is due within `within_s`, or its final."""
        now = self._now() if now_s is None else now_s
        # The store sends the seconds with millisecond precision.
        self._deadlines[request_id] = now + round(max(0.0, within_s), 3)
        self._messages[request_id] = (task_id, json.dumps(dict(kwargs), separators=(",", ":"), sort_keys=True))

    def overdue(self, *, next_within_s: float, now_s: float | None = None) -> list[Overdue]:
        """Requests past their deadline (each given a new one `next_within_s` away)."""
        now = self._now() if now_s is None else now_s
        due = sorted((deadline, request_id) for request_id, deadline in self._deadlines.items() if deadline <= now)
        found = []
        for _, request_id in due[:_MAX_SWEEP]:
            self._deadlines[request_id] = now + round(next_within_s, 3)
            task_id, kwargs = self._messages[request_id]
            found.append(Overdue(request_id, task_id, json.loads(kwargs)))
        return found

    def forget(self, request_id: str) -> None:
        """The request ended (its final outcome is recorded): nothing more to watch for."""
        self._deadlines.pop(request_id, None)
        self._messages.pop(request_id, None)
