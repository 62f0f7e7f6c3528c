"""Run a Celery worker as a child process (the demo and the integration tests use this).

A real `celery worker` process, not an in-thread stand-in: it is what production runs, and
killing it by PID is how the crash tests simulate a lost worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from embedded.child_stop import stop_child

__all__ = ["WorkerProcess", "worker_environment"]

_READY_MARKER = " ready."
_ENV_PREFIX = "SCCM_REFRESH_"


def worker_environment(
    *,
    redis_url: str,
    key_prefix: str,
    queue: str,
    providers: Mapping[str, Mapping[str, str]],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This process's environment minus its SCCM_REFRESH_* settings, plus a worker's own.

    `providers` maps a site code to provider fields (`{"endpoint": ..., "password_file": ...}`);
    secrets go by file, never by value, so nothing secret sits in a child's environment.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(_ENV_PREFIX)}
    env.update(
        {
            f"{_ENV_PREFIX}BROKER_URL": redis_url,
            f"{_ENV_PREFIX}REDIS_URL": redis_url,
            f"{_ENV_PREFIX}KEY_PREFIX": key_prefix,
            f"{_ENV_PREFIX}QUEUE": queue,
        }
    )
    for site, fields in providers.items():
        for name, value in fields.items():
            env[f"{_ENV_PREFIX}PROVIDERS__{site}__{name.upper()}"] = value
    env.update(extra or {})
    return env


class WorkerProcess:
    """`celery -A worker.app worker` with a given environment; started, watched, stopped by PID."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        queue: str,
        pool: str = "threads",
        concurrency: int = 4,
        name: str = "sccm-refresh",
        log_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.env = dict(env)
        self.queue = queue
        self.pool = pool
        self.concurrency = concurrency
        self.name = name
        self.log_file = log_file
        self.extra_args = extra_args
        # Unique per worker; Celery expands %h to this host's name (the node name a probe targets).
        self.hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h"
        self.process: subprocess.Popen[str] | None = None
        self.lines: deque[str] = deque(maxlen=5000)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._log: IO[str] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("worker not started")
        return self.process.pid

    @property
    def node_name(self) -> str:
        """The worker's Celery node name, e.g. `sccm-refresh-123-456@host` (its worker_direct queue's name)."""
        return self.hostname.replace("%h", socket.gethostname())

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "worker",
            "--pool",
            self.pool,
            "--concurrency",
            str(self.concurrency),
            "--queues",
            self.queue,
            "--hostname",
            self.hostname,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--events",
            *self.extra_args,
        ]

    def start(self, *, ready_timeout_s: float = 60.0) -> WorkerProcess:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("a", encoding="utf-8")
        self._ready.clear()
        self.process = subprocess.Popen(
            self.argv(),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Its own process group (pgid = its PID): a crash test kills the pool children too.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="celery-worker-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_timeout_s
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(list(self.lines)[-30:])
                why = (
                    f"exited with code {self.process.returncode}"
                    if self.process.returncode is not None
                    else (f"did not become ready in {ready_timeout_s:.0f}s")
                )
                raise RuntimeError(f"celery worker {why}:\n{tail}")
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            if _is_ready_line(line):
                self._ready.set()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """Warm shutdown (SIGTERM: unacked messages go back to the queue), then SIGKILL."""
        return self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> int | None:
        """A crash: SIGKILL the whole process group, so the pool's children die with it."""
        return self._signal_and_wait(signal.SIGKILL, 10.0, group=True)

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float, *, group: bool = False) -> int | None:
        if self.process is None:
            return None
        code = stop_child(self.process, grace_s=timeout_s, sig=sig, group=group)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def output(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_ready_line(line: str) -> bool:
    """Celery's "<node> ready." line, in the plain format or as a JSON log line (ops/logs.py)."""
    text = line.rstrip()
    if text.startswith("{"):
        try:
            message = json.loads(text).get("message", "")
        except (ValueError, AttributeError):
            return False
        return isinstance(message, str) and message.rstrip().endswith(_READY_MARKER)
    return text.endswith(_READY_MARKER)
