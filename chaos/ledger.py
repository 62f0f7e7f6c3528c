"""Read the outcome stream into final records, tolerating whatever a chaos run leaves in it.

`worker.stores.outcome_reader.read_stream` parses every entry into an `Outcome` and raises on the first it
cannot: right for consumers, wrong for an auditor, which must count a malformed entry and keep
going. So this reads the raw stream fields (names from worker.stores.keys) and takes only
`task_id`, `request_id`, `status` and `final` from each outcome's JSON. It also survives Redis going away
(a scenario restarts it): a failed read is retried at the next poll, from the same position.
"""

from __future__ import annotations

import json
from typing import Final, cast

from redis import exceptions as redis_errors

from chaos.report import FinalRecord
from worker.stores import keys as k
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

__all__ = ["OutcomeLedger"]

_BATCH: Final = 1000
_START_ID: Final = "0-0"
_SOCKET_TIMEOUT_S: Final = 2.0


class OutcomeLedger:
    """Incremental reader of one outcome stream: `poll()` adds what arrived since the last call."""

    def __init__(self, redis_url: str, keys: RedisKeys) -> None:
        # No client-side retries: a poll during a Redis restart should fail fast and try again later.
        self._redis = redis_from_url(redis_url, socket_timeout_s=_SOCKET_TIMEOUT_S, retries=0, decode_responses=False)
        self._stream = keys.outcome_stream
        self._after = _START_ID
        self.finals: list[FinalRecord] = []
        self.entries = 0
        self.malformed = 0
        self.read_errors = 0

    def poll(self) -> int:
        """Read every new entry; the number read (0 when Redis did not answer)."""
        read = 0
        while True:
            try:
                # RESP2 shape with bytes: [(id, {field: value})]; redis-py types the reply loosely.
                batch = cast(
                    list[tuple[bytes, dict[bytes, bytes]]],
                    self._redis.xrange(self._stream, min=f"({self._after}", count=_BATCH),
                )
            except redis_errors.RedisError:
                self.read_errors += 1
                return read
            for raw_id, fields in batch:
                stream_id = raw_id.decode()
                self._after = stream_id
                if fields.get(k.STREAM_FIELD_KIND.encode()) == k.STREAM_KIND_BULK.encode():
                    continue  # a bulk job's own outcome, not a request's
                self._record(stream_id, fields.get(k.STREAM_FIELD_OUTCOME.encode()))
            read += len(batch)
            if len(batch) < _BATCH:
                return read

    def _record(self, stream_id: str, outcome: bytes | None) -> None:
        self.entries += 1
        try:
            # Bytes, decoded leniently: a bad byte in an entry must not stop the audit.
            data = json.loads((outcome or b"").decode(errors="replace"))
            final = data["final"]
            status = data["status"]
            task_id = data["task_id"]
        except (KeyError, TypeError, ValueError):
            self.malformed += 1
            return
        if final is True:
            at_ms = int(stream_id.split("-", 1)[0])
            request_id = data.get("request_id")
            self.finals.append(
                FinalRecord(
                    task_id if isinstance(task_id, str) else None,
                    str(status),
                    at_ms,
                    request_id if isinstance(request_id, str) else None,
                )
            )

    def final_task_ids(self) -> set[str]:
        return {record.task_id for record in self.finals if record.task_id is not None}

    def close(self) -> None:
        self._redis.close()
