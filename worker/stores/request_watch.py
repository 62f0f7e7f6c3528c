"""A watch over every live request, so a lost message is sent again instead of lost.

kombu's Redis transport takes a message with BRPOP and only then records it as unacked: a worker
killed between the two loses the message (kombu #305), and every re-queue (a retry, a wait for a
provider slot or a medium) is a new message exposed to that gap. The chaos suite caught it. The
worker's own transport (worker/broker/transport.py) closes that gap; this watch stays as the net
for whatever else could lose a message that a worker has seen (a Redis failover that drops
recent writes, a message deleted by hand).

So each delivery of a valid request records when the next sign of it is due: its kwargs and task
id, with a deadline past which its message must have been delivered again or its final outcome
published (the attempt's time limit, or its countdown, plus the broker's visibility timeout and
a margin). The final outcome's publication forgets the request (worker/stores/outcome_writer.lua, in the
same script). A sweeper in every worker (worker/lifecycle.py) sends again what is overdue; the
copy is harmless: a final already recorded drops it (and forgets the request: a delivery that
arrives after the final set a deadline again), and the invoke fence and attempt lock keep it from
refreshing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from redis import Redis

from worker.stores.keys import RedisKeys
from worker.stores.lua import epoch_arg, load_script

__all__ = ["Overdue", "RequestWatch"]

log = logging.getLogger(__name__)

_SCRIPT: Final = "request_watch.lua"
_MAX_SWEEP: Final = 200


@dataclass(frozen=True)
class Overdue:
    """A request whose message vanished: send it again with these kwargs under this task id."""

    request_id: str
    task_id: str
    kwargs: dict[str, Any]


class RequestWatch:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._script = load_script(redis, _SCRIPT)

    def expect(
        self, request_id: str, task_id: str, kwargs: Mapping[str, Any], *, within_s: float, now_s: float | None = None
    ) -> None:
        """A delivery of this request (these kwargs) is due within `within_s`, or its final."""
        message = f"{task_id} {json.dumps(dict(kwargs), separators=(',', ':'), sort_keys=True)}"
        self._run("expect", now_s, request_id, f"{max(0.0, within_s):.3f}", message)

    def forget(self, request_id: str) -> None:
        """Nothing more to watch for: the request ended (a final publication does this in its own script)."""
        self._run("forget", None, request_id)

    def overdue(self, *, next_within_s: float, now_s: float | None = None) -> list[Overdue]:
        """Requests past their deadline (each given a new one `next_within_s` away)."""
        flat = self._run("overdue", now_s, _MAX_SWEEP, f"{next_within_s:.3f}")
        found: list[Overdue] = []
        for i in range(0, len(flat), 2):
            task_id, _, kwargs = str(flat[i + 1]).partition(" ")
            try:
                found.append(Overdue(str(flat[i]), task_id, json.loads(kwargs)))
            except ValueError:
                log.warning("request watch: unreadable entry for %s skipped", str(flat[i])[:128])
        return found

    def _run(self, op: str, now_s: float | None, *args: str | int) -> Any:
        keys = [self._keys.watch_deadlines, self._keys.watch_messages]
        return self._script(keys=keys, args=[op, epoch_arg(now_s), *args])
