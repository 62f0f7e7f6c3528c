"""Worker liveness that proves the worker still consumes: a probe through the broker to THAT worker.

A Celery worker can stop consuming after a Redis reconnect while its process, its heartbeats
and even its remote-control replies look alive (celery #8030 and later reports). So the check
sends a probe task to the worker's own queue (Celery's `worker_direct`: every worker also
consumes `<nodename>.dq2`) and waits for its effect: the probe, run by that worker's pool,
pushes the worker's node name onto a Redis list named by a fresh token (in the outcome Redis,
so both of the worker's Redis connections are proven). The checker BLPOPs that list.

    sccm-refresh health worker [--node celery@HOST] [--timeout-s 20]     exit 0 healthy, 1 not

A worker whose every pool slot is busy runs the probe only when a slot frees (prefetch is 1 per
slot): give the timeout some room, and let the orchestrator count several failures in a row
before restarting. A probe that arrives after its checker gave up has expired and is dropped.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from celery.utils.nodenames import default_nodename, worker_direct
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from config.settings import get_settings
from worker.app import app
from worker.runtime import publisher
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

__all__ = ["PROBE_TASK", "ProbeResult", "check_worker", "health_probe"]

PROBE_TASK: Final = "sccm.health_probe"
# A reply nobody waits for any more disappears on its own.
REPLY_TTL_S: Final = 300
_TOKEN: Final = re.compile(r"^[0-9a-f]{32}$")
# BLPOP blocks server-side; the socket must outlive it.
_SOCKET_MARGIN_S: Final = 5.0


@app.task(name=PROBE_TASK, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]  # Celery ships no types
def health_probe(token: object = None) -> None:
    """Push this worker's node name onto the reply list of `token` (a 32-hex-digit string)."""
    if not (isinstance(token, str) and _TOKEN.fullmatch(token)):
        return  # not ours to answer; nothing a producer sends here is trusted
    writer = publisher()
    key = writer.keys.health_probe_reply(token)
    node = str(health_probe.request.hostname or "")
    with writer.redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key, node)
        pipe.expire(key, REPLY_TTL_S)
        pipe.execute()


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    node: str
    elapsed_s: float
    detail: str

    def line(self) -> str:
        verdict = "healthy" if self.healthy else "UNHEALTHY"
        return f"{verdict}: worker {self.node} {self.detail} ({self.elapsed_s:.2f}s)"


def check_worker(node: str | None = None, *, timeout_s: float = 20.0, celery_app: Any = None) -> ProbeResult:
    """Send one probe to `node` (default: this host's default Celery node name) and await its reply."""
    node = node or default_nodename(None)
    celery_app = celery_app or app
    settings = get_settings()
    keys = RedisKeys(settings.key_prefix)
    token = uuid.uuid4().hex
    reply_key = keys.health_probe_reply(token)
    started = time.monotonic()

    def result(healthy: bool, detail: str) -> ProbeResult:
        return ProbeResult(healthy, node, time.monotonic() - started, detail)

    client = redis_from_url(settings.redis_url, socket_timeout_s=timeout_s + _SOCKET_MARGIN_S)
    try:
        try:
            celery_app.send_task(
                PROBE_TASK,
                kwargs={"token": token},
                queue=worker_direct(node),
                # A probe still queued when this check has given up must not run later.
                expires=timeout_s,
                retry=False,
            )
        except OperationalError as exc:
            return result(False, f"could not be probed: the broker is unreachable ({type(exc).__name__})")
        remaining_s = max(0.01, timeout_s - (time.monotonic() - started))
        try:
            reply = client.blpop([reply_key], timeout=remaining_s)
            client.delete(reply_key)
        except RedisError as exc:
            return result(False, f"could not be probed: the outcome Redis is unreachable ({type(exc).__name__})")
    finally:
        client.close()
    if reply is None:
        return result(False, f"did not consume a probe within {timeout_s:g}s")
    answered_by = reply[1]
    if answered_by != node:
        return result(False, f"probe answered by {answered_by!r}, not by the worker asked")
    return result(True, "consumed a probe")
