"""A child service (the API, Flower) started for the demo: ready when it says so, stopped by PID.

The service runs `python -m cli.main <command> ...` with a given environment; it is ready when a
line of its output starts with `ready_prefix` (the rest of the line, e.g. its URL, is kept) or,
without a prefix, once its HTTP `probe_url` answers. Its output goes to a log file. `stop()`
sends SIGTERM to its process group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import requests

from embedded.child_stop import stop_child

__all__ = ["ServiceProcess", "free_port"]

_POLL_S = 0.1
_STOP_GRACE_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now (for services that cannot be told to pick one themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        log_file: Path,
        ready_prefix: str | None = None,
        probe_url: str | None = None,
    ) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "cli.main", *args]
        self.env = dict(env)
        self.log_file = log_file
        self.ready_prefix = ready_prefix
        self.probe_url = probe_url
        self.ready_line: str | None = None
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._log: IO[str] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} not started")
        return self.process.pid

    def start(self, *, ready_timeout_s: float = 60.0) -> ServiceProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: stop() takes its children too
        )
        threading.Thread(target=self._read, name=f"{self.name}-output", daemon=True).start()
        deadline = time.monotonic() + ready_timeout_s
        while not self._is_ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start (see {self.log_file})")
            time.sleep(_POLL_S)
        return self

    def _is_ready(self) -> bool:
        if self.ready_prefix is not None:
            return self._ready.is_set()
        if self.probe_url is None:
            return True
        try:
            requests.get(self.probe_url, timeout=1.0)
        except requests.RequestException:
            return False
        return True

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            if self.ready_prefix is not None and line.startswith(self.ready_prefix) and not self._ready.is_set():
                self.ready_line = line[len(self.ready_prefix) :].strip()
                self._ready.set()

    def stop(self) -> None:
        if self.process is not None:
            stop_child(self.process, grace_s=_STOP_GRACE_S, group=True, reap_s=None)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
