"""A scenario's state once a second, written as JSON lines next to its logs (`timeline.jsonl`).

A row that misses its lateness bound says *that* it was late, not *why*. The timeline says where the
requests were each second: queued, in a consumer's in-flight list, held unacked by kombu, parked
for a provider slot, woken ahead; how many slots were held and by live leases; how many outcomes
and accepted refreshes had come. A stall shows as seconds in which none of those moves. Reads
only (Redis refuses writes at maxmemory, not reads); a read that fails is recorded as the error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from redis import Redis
from redis import exceptions as redis_errors

from testing.fixtures_pipeline import UNACKED_HASH
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

__all__ = ["TIMELINE_FILE", "Timeline", "broker_lists", "sample_redis"]

TIMELINE_FILE: Final = "timeline.jsonl"
_INTERVAL_S: Final = 1.0
# kombu's Redis transport keeps a message with priority p > 0 in "<queue>\x06\x16<p>".
_PRIORITY_SEPARATOR: Final = "\x06\x16"
# No provider call for this long while requests wait: a stall, whose workers' stacks are saved.
STALL_S: Final = 8.0
_STALL_DUMP_EVERY_S: Final = 30.0
_DUMP_TIMEOUT_S: Final = 20.0


def broker_lists(client: Redis, *, queue: str, inflight_prefix: str) -> tuple[list[str], list[str]]:
    """The lists a message can wait in: the queue with its priority lists, and the consumers' in-flight
    lists (worker/broker/transport.py: "<inflight prefix>:<consumer>|<queue>") until kombu records it."""
    queues = [queue, *client.scan_iter(match=f"{queue}{_PRIORITY_SEPARATOR}*")]
    return queues, list(client.scan_iter(match=f"{inflight_prefix}:*|*"))


def sample_redis(
    client: Redis, keys: RedisKeys, *, queue: str, inflight_prefix: str, site_code: str, now_s: float
) -> dict[str, Any]:
    """Where the messages and slots stand in Redis at `now_s` (one SCAN per message family)."""
    queues, inflight = broker_lists(client, queue=queue, inflight_prefix=inflight_prefix)
    slot = keys.slot_keys(site_code)
    pipe = client.pipeline(transaction=False)
    for name in queues:
        pipe.llen(name)
    for name in inflight:
        pipe.llen(name)
    pipe.hlen(UNACKED_HASH)
    pipe.zcard(slot.holders)
    pipe.zcount(slot.holders, f"({now_s}", "+inf")
    pipe.zcard(slot.waiters)
    pipe.hlen(slot.parked)
    pipe.zcard(slot.prewoken)
    pipe.xlen(keys.outcome_stream)
    pipe.info("memory")
    pipe.hgetall(slot.leases)
    pipe.hkeys(slot.parked)
    replies = pipe.execute()
    queued = sum(int(n) for n in replies[: len(queues)])
    in_flight = sum(int(n) for n in replies[len(queues) : len(queues) + len(inflight)])
    unacked, holders, live_holders, waiters, parked, prewoken, outcomes, memory, leases, parked_ids = replies[
        len(queues) + len(inflight) :
    ]
    unclaimed = {
        _text(holder): round(now_s - float(_text(lease).split(" ", 1)[0]), 1)
        for holder, lease in leases.items()
        if holder in set(parked_ids)
    }
    return {
        # Granted by a wake whose message has not claimed the slot yet: holder -> seconds since the grant.
        "unclaimed": unclaimed,
        "unclaimed_messages": {
            holder: _where_is_wake(client, slot.parked, holder) for holder, age_s in unclaimed.items() if age_s > 2
        },
        "queued": queued,
        "in_flight": in_flight,
        "unacked": int(unacked),
        "slot_holders": int(holders),
        "slot_holders_live": int(live_holders),
        "waiters": int(waiters),
        "parked": int(parked),
        "woken_ahead": int(prewoken),
        "outcomes": int(outcomes),
        "used_memory": int(memory.get("used_memory", 0)),
    }


def _where_is_wake(client: Redis, parked_key: str, holder: str) -> dict[str, Any]:
    """Where the message a wake sent back is: its queue, kombu's unacked record, or nowhere."""
    record = client.hget(parked_key, holder)
    if record is None:
        return {"record": None}
    try:
        wake = json.loads(record)
        message = json.loads(wake["message"])
        tag = str(message["properties"]["delivery_tag"])
    except (ValueError, KeyError, TypeError):
        return {"record": _text(record)[:200]}
    queued = client.lpos(wake["queue"], wake["message"])
    return {
        "queue": wake["queue"],
        "tag": tag,
        "in_queue_at": queued,
        "unacked": bool(client.hexists(UNACKED_HASH, tag)),
    }


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Timeline:
    """Samples the rig every second in a thread until `stop()`; each line also carries `extra()`."""

    def __init__(
        self,
        path: Path,
        redis_url: str,
        keys: RedisKeys,
        *,
        queue: str,
        inflight_prefix: str,
        site_code: str,
        extra: Callable[[], Mapping[str, Any]],
        worker_pids: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._path = path
        self._redis_url = redis_url
        self._keys = keys
        self._queue = queue
        self._inflight_prefix = inflight_prefix
        self._site_code = site_code
        self._extra = extra
        self._worker_pids = worker_pids
        self._progress: tuple[object, float] | None = None
        self._dumped_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-timeline", daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        client = redis_from_url(self._redis_url, retries=0, socket_timeout_s=2.0)
        try:
            with self._path.open("a", encoding="utf-8") as out:
                while not self._stop.wait(_INTERVAL_S):
                    now_s = time.time()
                    line: dict[str, Any] = {"t": round(now_s, 3), **self._extra()}
                    try:
                        line.update(
                            sample_redis(
                                client,
                                self._keys,
                                queue=self._queue,
                                inflight_prefix=self._inflight_prefix,
                                site_code=self._site_code,
                                now_s=now_s,
                            )
                        )
                    except redis_errors.RedisError as exc:
                        line["error"] = type(exc).__name__
                    if self._stalled(line, now_s):
                        line["stall_dumps"] = self._dump_stacks(now_s)
                    out.write(json.dumps(line) + "\n")
                    out.flush()
        finally:
            client.close()

    def _stalled(self, line: Mapping[str, Any], now_s: float) -> bool:
        """No provider call for STALL_S while requests wait (queued, held, parked), once per _STALL_DUMP_EVERY_S."""
        calls = line.get("provider_requests")
        if self._progress is None or self._progress[0] != calls:
            self._progress = (calls, now_s)
            return False
        waiting = sum(int(line.get(name, 0)) for name in ("queued", "unacked", "parked"))
        return waiting > 0 and now_s - self._progress[1] >= STALL_S and now_s - self._dumped_at >= _STALL_DUMP_EVERY_S

    def _dump_stacks(self, now_s: float) -> list[str]:
        """Every worker's threads (py-spy dump), saved next to the timeline: what a stall is waiting on."""
        self._dumped_at = now_s
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            return []
        written = []
        for name, pid in self._worker_pids().items():
            path = self._path.with_name(f"stall-{int(now_s)}-{name}.txt")
            try:
                done = subprocess.run(
                    [spy, "dump", "--pid", str(pid)],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=_DUMP_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                path.write_text(f"py-spy failed: {exc}\n", encoding="utf-8")
            else:
                path.write_text(done.stdout + done.stderr, encoding="utf-8")
            written.append(path.name)
        return written
