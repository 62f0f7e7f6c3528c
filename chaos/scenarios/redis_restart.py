"""Redis shutdown and restart mid-run: same port, same data directory, AOF with fsync always.

Requests are sent at a steady pace (the producer keeps sending through the outage: Celery's
publish retry), some wait for a STORAGE_COMPRESS medium (held unacked, counting down, when
Redis goes away). Once a third of the finals are in, Redis is shut down (SIGTERM: it writes its
AOF and exits), kept down until a worker has noticed, then started again. Neither worker is
restarted: each must reconnect by itself.

Promise: 0 lost, 0 duplicate finals, 0 extra provider refreshes, and no worker crashed (both
are still running at the end: they reconnected by themselves).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Final

from chaos.report import Check, Row
from chaos.rig import Rig
from chaos.scenario import Disruptor, RunOptions, Scenario, finish, rig_config
from chaos.workload import PackagePool, compress_mix, send_all, valid_requests
from testing.waiting import wait_until

__all__ = ["SCENARIO"]

NAME: Final = "redis-restart"
RESTART_AT_SHARE: Final = 1 / 3
SEND_INTERVAL_S: Final = 0.02
LATENCY_MEAN_S: Final = 0.03
MEDIUM_READY_AFTER_S: Final = 2.0
COMPRESS_SHARE_OF_REQUESTS: Final = 0.15
# Celery's consumer logs this while it retries a lost broker connection.
RECONNECTING: Final = "Cannot connect to sccm-redis://"
NOTICE_TIMEOUT_S: Final = 15.0
WAIT_FOR_SHARE_TIMEOUT_S: Final = 60.0


@dataclass
class RestartLog:
    restarts: int = 0
    down_s: float = 0.0
    noticed: bool = False
    ended_epoch_s: float | None = None  # when Redis answered again


def restart_redis(rig: Rig, requests: int, log: RestartLog) -> None:
    """The disruption: when a third of the finals are in, shut Redis down, wait, start it again."""
    wait_until(lambda: rig.finals_seen() >= RESTART_AT_SHARE * requests, timeout_s=WAIT_FOR_SHARE_TIMEOUT_S)
    stopped = time.monotonic()
    rig.redis_server.stop()
    log.noticed = wait_until(
        lambda: any(RECONNECTING in worker.output() for worker in rig.workers), timeout_s=NOTICE_TIMEOUT_S
    )
    rig.redis_server.start()
    log.ended_epoch_s = time.time()
    log.down_s = time.monotonic() - stopped
    log.restarts += 1


def run(options: RunOptions) -> Row:
    rng = random.Random(options.seed)
    config = rig_config(
        options,
        compress_share=0.25,
        medium_not_ready_share=1.0,
        medium_ready_after_s=MEDIUM_READY_AFTER_S,
        latency_s=LATENCY_MEAN_S,
        latency_distribution="uniform",
    )
    with Rig(options.workdir / NAME, config, seed=options.seed) as rig:
        pool = PackagePool(rig.catalogue(), rng)
        outgoing = valid_requests(pool, rng, options.requests, pick=compress_mix(COMPRESS_SHARE_OF_REQUESTS))
        log = RestartLog()
        disruptor = Disruptor("redis", lambda: restart_redis(rig, len(outgoing), log)).start()
        first_send = send_all(rig, outgoing, interval_s=SEND_INTERVAL_S)
        disruptor.join(WAIT_FOR_SHARE_TIMEOUT_S + NOTICE_TIMEOUT_S + 30)
        rig.drain([m.sent.task_id for m in outgoing], since_epoch_s=log.ended_epoch_s)
        checks = [
            Check(
                "Redis restarted once mid-run, noticed by a worker",
                disruptor.error is None and log.restarts == 1 and log.noticed,
                disruptor.error or f"restarts={log.restarts} noticed={log.noticed} down {log.down_s:.1f} s",
            ),
        ]
        return finish(
            rig,
            NAME,
            [m.sent for m in outgoing],
            first_send_epoch_s=first_send,
            fault_ended_epoch_s=log.ended_epoch_s,
            checks=checks,
            details={"redis_down_s": round(log.down_s, 2)},
        )


SCENARIO: Final = Scenario(
    NAME,
    "Redis shut down and restarted mid-run (AOF, fsync always): 0 lost, 0 duplicates, 0 extra refreshes",
    run,
)
