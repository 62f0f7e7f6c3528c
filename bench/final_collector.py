"""Wait for the final outcomes of a known set of requests, noting when each one arrived.

Reads the outcome stream (not pub/sub) on its own thread: the stream is lossless, so a reader
that falls behind a burst catches up instead of missing messages. It starts from the newest
entry at construction, so build it before enqueueing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Final

from worker.domain.outcomes import Outcome
from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import read_stream
from worker.stores.redis_client import redis_from_url

__all__ = ["FinalCollector"]

# XREAD BLOCK must stay below redis_from_url's socket timeout (5 s); short, so close() is prompt.
_BLOCK_MS: Final = 100
_BATCH: Final = 1000
_JOIN_TIMEOUT_S: Final = 5.0
_OLDEST_ID: Final = "0-0"


class FinalCollector:
    """`arrivals[request_id] = (time.perf_counter() at arrival, final Outcome)` for expected requests."""

    def __init__(self, redis_url: str, keys: RedisKeys, expected: Iterable[str]) -> None:
        # Its own connection: a blocking XREAD holds it.
        self._redis = redis_from_url(redis_url, client_name="bench-final-collector")
        self._keys = keys
        self._expected = frozenset(expected)
        newest = self._redis.xrevrange(keys.outcome_stream, count=1)
        self._after_id = str(newest[0][0]) if newest else _OLDEST_ID
        self.arrivals: dict[str, tuple[float, Outcome]] = {}
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="final-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and len(self.arrivals) < len(self._expected):
                entries = read_stream(
                    self._redis, self._keys, after_id=self._after_id, count=_BATCH, block_ms=_BLOCK_MS
                )
                now = time.perf_counter()
                for entry in entries:
                    self._after_id = entry.stream_id
                    outcome = entry.outcome
                    if outcome.final and outcome.request_id in self._expected:
                        self.arrivals.setdefault(outcome.request_id, (now, outcome))
        except BaseException as exc:  # handed to the caller by wait()
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout_s: float) -> bool:
        """True once every expected final has arrived, False at the timeout; re-raises a reader error."""
        self._done.wait(max(0.0, timeout_s))
        if self.error is not None:
            raise self.error
        return len(self.arrivals) == len(self._expected)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_JOIN_TIMEOUT_S)
        self._redis.close()

    def __enter__(self) -> FinalCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
