"""`sccm-refresh health worker`: a probe through the broker to one worker, awaited in Redis.

Healthy means that very worker consumed the probe; a worker that is alive but not consuming
(its consumers cancelled: it still answers a remote-control ping; or the process stopped) fails
within the timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from config.settings import Settings
from testing.fixtures_worker import BareWorker, BareWorkerFactory
from worker.app import create_app

pytestmark = pytest.mark.integration

TIMEOUT_S: Final = 3.0
# Process start (imports Celery) plus the timeout, plus scheduling slack on a shared machine.
WALL_CLOCK_LIMIT_S: Final = TIMEOUT_S + 12.0


@dataclass(frozen=True)
class Check:
    code: int
    output: str
    elapsed_s: float


def run_check(bare: BareWorker, *args: str, node: str | None = None) -> Check:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "health",
            "worker",
            "--node",
            node or bare.worker.node_name,
            "--timeout-s",
            str(TIMEOUT_S),
            *args,
        ],
        env=bare.worker.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Check(result.returncode, result.stdout + result.stderr, time.monotonic() - started)


@pytest.fixture
def bare(bare_worker_factory: BareWorkerFactory) -> Iterator[BareWorker]:
    yield bare_worker_factory()


def test_a_consuming_worker_is_healthy(bare: BareWorker) -> None:
    """The probe reaches the named worker, which answers through Redis: exit 0."""
    check = run_check(bare)
    assert check.code == 0, check.output
    assert check.output.startswith(f"healthy: worker {bare.worker.node_name} consumed a probe"), check.output


def test_a_worker_that_does_not_exist_is_unhealthy_within_the_timeout(bare: BareWorker) -> None:
    """No worker by that name: nothing consumes the probe, exit 1 once the timeout has passed."""
    check = run_check(bare, node="nobody-here@nowhere")
    assert check.code == 1, check.output
    assert "did not consume a probe within 3s" in check.output
    assert check.elapsed_s < WALL_CLOCK_LIMIT_S


def test_a_worker_whose_consumers_are_cancelled_is_unhealthy_though_it_answers_ping(bare: BareWorker) -> None:
    """With its queues' consumers cancelled the process still answers ping, but the probe check fails."""
    node = bare.worker.node_name
    control = create_app(Settings(broker_url=bare.redis_url, redis_url=bare.redis_url, queue=bare.queue)).control
    assert run_check(bare).code == 0
    for queue in (bare.queue, f"{node}.dq2"):
        replies = control.cancel_consumer(queue, destination=[node], reply=True, timeout=5)
        assert replies and "ok" in next(iter(replies[0].values())), replies
    assert control.ping(destination=[node], timeout=5), "the worker should still answer remote control"
    check = run_check(bare)
    assert check.code == 1, check.output
    assert "did not consume a probe" in check.output
    assert check.elapsed_s < WALL_CLOCK_LIMIT_S


def test_a_stopped_worker_process_is_unhealthy_then_healthy_again_once_continued(bare: BareWorker) -> None:
    """SIGSTOP: the probe times out (exit 1); after SIGCONT the next probe passes and the stale one is dropped."""
    os.kill(bare.worker.pid, signal.SIGSTOP)
    try:
        check = run_check(bare)
    finally:
        os.kill(bare.worker.pid, signal.SIGCONT)
    assert check.code == 1, check.output
    assert check.elapsed_s < WALL_CLOCK_LIMIT_S
    again = run_check(bare)
    assert again.code == 0, again.output


def test_health_rejects_a_bad_timeout_with_one_line() -> None:
    """A non-positive timeout is a usage error (exit 2) on one line, not a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "health", "worker", "--timeout-s", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "must be above 0" in result.stderr
