"""Pytest fixtures for a real Redis: our own redis-server on a free port, one per test session.

Isolation between tests: each test gets its own database number (1..15, cycling) flushed
before use, plus a unique key prefix (`redis_keys`, "t-<uuid8>") because Pub/Sub channels are
shared by all databases. Database 0 is never flushed here: it is left to session-scoped users
(a Celery worker fixture, say) that would break if their keys vanished between tests.

    def test_x(redis_client, redis_keys): ...
    def test_y(redis_server_factory): server = redis_server_factory()   # a private server
    # Tests that kill a server and then check its data pass appendfsync="always": with
    # everysec, Redis may postpone the AOF write (not the reply) while a slow fsync runs.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis

from embedded.redis_server import AppendFsync, RedisServer
from worker.stores.keys import RedisKeys
from worker.stores.redis_client import redis_from_url

__all__ = [
    "RedisServerFactory",
    "redis_client",
    "redis_keys",
    "redis_server",
    "redis_server_factory",
    "redis_url",
]

_DATABASES = 16
# Database 0 is reserved for session-scoped users; tests cycle through the others.
_TEST_DATABASES = itertools.cycle(range(1, _DATABASES))


class RedisServerFactory(Protocol):
    def __call__(self, *, appendfsync: AppendFsync = "everysec", password: str | None = None) -> RedisServer: ...


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session (free port, AOF in a tmp dir); stopped at the end."""
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"), databases=_DATABASES)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of a database of the session server reserved for this test and flushed before it."""
    db = next(_TEST_DATABASES)
    url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client from worker.stores.redis_client (decoded responses) on this test's database."""
    client = redis_from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_keys() -> RedisKeys:
    """A key layout under a prefix unique to this test."""
    return RedisKeys(prefix=f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[RedisServerFactory]:
    """Start private redis-servers (for tests that stop, kill or restart them); all closed after."""
    servers: list[RedisServer] = []

    def start(*, appendfsync: AppendFsync = "everysec", password: str | None = None) -> RedisServer:
        server = RedisServer(data_dir=tmp_path / f"redis-{len(servers)}", appendfsync=appendfsync, password=password)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()
