"""`sccm-refresh flower` as a child process with a basic-auth file, for tests; stopped by PID.

flower = FlowerProcess(worker.env, log_file=tmp / "flower.log", auth_file=tmp / "flower-auth").start()
flower.api("/api/tasks").json()          # with the login
flower.get("/metrics").status_code       # without: 401
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

import requests

__all__ = ["FLOWER_LOGIN_PASSWORD", "FLOWER_USER", "FlowerProcess"]

# Flower's own login, deliberately unlike the SCCM secrets tests search for.
FLOWER_USER: Final = "flower-admin"
FLOWER_LOGIN_PASSWORD: Final = "flower-test-login"  # noqa: S105 - a test login for a loopback Flower
FLOWER_READY_TIMEOUT_S: Final = 20.0
FLOWER_HTTP_TIMEOUT_S: Final = 5.0
_FLOWER_PORT_ATTEMPTS: Final = 5
_ADDRESS_IN_USE: Final = "Address already in use"
# Flower sets this gauge from worker heartbeats: its event receiver is live once it shows.
_WORKER_ONLINE_METRIC: Final = re.compile(r"^flower_worker_online\{[^}]*\} 1\.0$", re.MULTILINE)
_POLL_S: Final = 0.05


class FlowerProcess:
    """`sccm-refresh flower` with the worker's environment and a basic-auth file; stopped by PID."""

    def __init__(
        self, env: Mapping[str, str], *, log_file: Path, auth_file: Path, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.env = dict(env)
        self.log_file = log_file
        self.auth_file = auth_file
        self.extra_args = extra_args
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def login(self) -> tuple[str, str]:
        return (FLOWER_USER, FLOWER_LOGIN_PASSWORD)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FlowerProcess:
        """Start on a free port (another if it was taken meanwhile) and wait until events flow."""
        self.auth_file.touch(mode=0o600)
        self.auth_file.write_text(f"{FLOWER_USER}:{FLOWER_LOGIN_PASSWORD}\n", encoding="utf-8")
        for _attempt in range(_FLOWER_PORT_ATTEMPTS):
            self.port = _free_port()
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            self._log = self.log_file.open("ab")
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "flower",
                    "--address=127.0.0.1",
                    f"--port={self.port}",
                    f"--basic-auth-file={self.auth_file}",
                    *self.extra_args,
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_ready():
                return self
            self.stop()
            if _ADDRESS_IN_USE not in self.log_file.read_bytes()[log_offset:].decode(errors="replace"):
                break
        raise RuntimeError(f"Flower did not become ready; see {self.log_file}:\n{self.log_text()[-3000:]}")

    def _wait_ready(self) -> bool:
        """True once Flower has received a worker heartbeat (its event receiver is consuming)."""
        deadline = time.monotonic() + FLOWER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                metrics = self.get("/metrics", auth=(FLOWER_USER, FLOWER_LOGIN_PASSWORD))
                if metrics.status_code == 200 and _WORKER_ONLINE_METRIC.search(metrics.text):
                    return True
            except requests.ConnectionError:
                pass  # not listening yet
            time.sleep(_POLL_S)  # an external process: no event to await
        return False

    def get(self, path: str, *, auth: tuple[str, str] | None = None) -> requests.Response:
        return requests.get(self.base_url + path, auth=auth, timeout=FLOWER_HTTP_TIMEOUT_S)

    def api(self, path: str) -> requests.Response:
        """GET with Flower's basic-auth login; raises on an HTTP error."""
        response = self.get(path, auth=self.login)
        response.raise_for_status()
        return response

    def task_info(self, task_id: str) -> dict[str, Any]:
        """Flower's record of one task (state, result, retries, ...); empty while it knows none."""
        response = self.get(f"/api/task/info/{task_id}", auth=self.login)
        return dict(response.json()) if response.status_code == 200 else {}

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        """SIGTERM our PID, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
