"""The SMS Provider emulator as a child process, for benchmarks.

A separate process, like a real provider on another host: its CPU is accounted apart from the
client's, and it shares no GIL with client threads. The password travels in the environment
(never argv, which `ps` shows); the child runs in its own session so a terminal's Ctrl-C
reaches only us, and we stop it by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import requests

from emulator.cli import PASSWORD_ENV

__all__ = ["EmulatorProcess"]

URL_PREFIX: Final = "WS-Man endpoint: "
STARTUP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
ADMIN_TIMEOUT_S: Final = 10.0
SETTLE_TIMEOUT_S: Final = 2.0
_SETTLE_POLL_S: Final = 0.005


class EmulatorProcess:
    """`python -m emulator` on 127.0.0.1, a free port; its admin API through one keep-alive session."""

    def __init__(self, *, username: str, password: str, emulator_args: Sequence[str] = ()) -> None:
        env = {**os.environ, PASSWORD_ENV: password}
        argv = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", "0", "--username", username]
        self.process = subprocess.Popen(
            [*argv, *emulator_args], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        self.session = requests.Session()
        self.session.auth = (username, password)
        self.session.trust_env = False
        try:
            self.url = self._read_url()
        except BaseException:
            self.stop()
            raise
        self.admin_url = self.url.removesuffix("/wsman") + "/admin/"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_url(self) -> str:
        # A reader thread bounds the wait on a child that stays silent (readline would block).
        stdout = self.process.stdout
        assert stdout is not None
        found: list[str] = []

        def read() -> None:
            for line in stdout:
                if line.startswith(URL_PREFIX):
                    found.append(line.removeprefix(URL_PREFIX).strip())
                    return

        reader = threading.Thread(target=read, name="emulator-stdout", daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT_S)
        if not found:
            raise RuntimeError(f"the emulator did not print its endpoint within {STARTUP_TIMEOUT_S:.0f} s")
        return found[0]

    def admin(self, method: str, route: str, body: Mapping[str, Any] | None = None) -> Any:
        """One admin call (JSON body when given); its JSON answer."""
        response = self.session.request(
            method, self.admin_url + route, json=dict(body) if body is not None else None, timeout=ADMIN_TIMEOUT_S
        )
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """The /admin/stats snapshot: operations, CPU ms per operation (mean/p50/p95), counters."""
        snapshot: dict[str, Any] = self.admin("GET", "stats")
        return snapshot

    def reset_stats(self) -> None:
        self.admin("POST", "stats/reset")

    def settle(self, operations: int) -> None:
        """Wait (bounded) until `operations` are recorded: the server records one after its reply."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.stats()["operations"] < operations and time.monotonic() < deadline:
            time.sleep(_SETTLE_POLL_S)  # another process's counter: there is no event to await

    def packages(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self.admin("GET", "packages")["packages"]
        return listing

    def stop(self) -> None:
        """SIGTERM our PID (the emulator stops cleanly), SIGKILL if it lingers."""
        self.session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
