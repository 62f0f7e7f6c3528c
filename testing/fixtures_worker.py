"""A bare worker: its own redis-server and one `celery worker` process, no emulators.

For tests of the worker process itself (liveness probe, logs, Flower) that need no SMS Provider.

    def test_x(bare_worker_factory):
        bare = bare_worker_factory()          # bare.worker (WorkerProcess), bare.redis_url, bare.keys
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from embedded.redis_server import RedisServer
from embedded.worker_process import WorkerProcess, worker_environment
from worker.stores.keys import RedisKeys

__all__ = ["BareWorker", "BareWorkerFactory", "bare_worker_factory"]


@dataclass
class BareWorker:
    redis_server: RedisServer
    keys: RedisKeys
    queue: str
    worker: WorkerProcess

    @property
    def redis_url(self) -> str:
        return self.redis_server.url


BareWorkerFactory = Callable[..., BareWorker]


@pytest.fixture
def bare_worker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BareWorkerFactory]:
    """Start bare workers (each with its own Redis); all stopped by PID at teardown."""
    stops: list[Callable[[], object]] = []

    def build(*, extra_env: dict[str, str] | None = None, worker_args: tuple[str, ...] = ()) -> BareWorker:
        tmp = tmp_path_factory.mktemp("bare-worker")
        server = RedisServer(data_dir=tmp / "redis").start()
        stops.append(server.close)
        keys = RedisKeys(f"t-{uuid.uuid4().hex[:8]}")
        queue = f"q-{keys.prefix}"
        env = worker_environment(
            redis_url=server.url, key_prefix=keys.prefix, queue=queue, providers={}, extra=extra_env
        )
        worker = WorkerProcess(env, queue=queue, concurrency=2, log_file=tmp / "worker.log", extra_args=worker_args)
        worker.start()
        stops.append(worker.stop)
        return BareWorker(server, keys, queue, worker)

    yield build
    for stop in reversed(stops):
        stop()
