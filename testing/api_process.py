"""The HTTP API as a child process, and a small Server-Sent Events reader (tests and benchmarks).

server = ApiServer(env, log_file).start()     # `python -m cli.main api --port 0`, stopped by PID
client = server.client(token)                 # httpx.Client with the bearer token
for event in iter_sse(client, "/v1/events", params=..., deadline_s=...): ...
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.server import LISTENING_PREFIX
from embedded.child_stop import stop_child

__all__ = ["ApiServer", "SseEvent", "iter_sse"]

# Modules of this checkout that are not installed (bench.noop_app) run from its root.
REPO_ROOT = Path(__file__).resolve().parents[1]


class ApiServer:
    """`python -m cli.main api ...` (or another module printing the same line) in a subprocess.

    Started on a free port (read from its "listening on" line), stopped by PID.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_file: Path,
        *,
        args: tuple[str, ...] = (),
        module: tuple[str, ...] = ("cli.main", "api", "--port", "0"),
    ) -> None:
        self.env = dict(env)
        self.log_file = log_file
        self.argv = [sys.executable, "-m", *module, *args]
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.stdout: deque[str] = deque(maxlen=1000)
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("API server not started")
        return self.process.pid

    def start(self, *, ready_timeout_s: float = 30.0) -> ApiServer:
        log = self.log_file.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        log.close()
        listening = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(listening,), name="api-stdout", daemon=True)
        self._reader.start()
        if not listening.wait(ready_timeout_s) or not self.url:
            self.stop()
            raise RuntimeError(f"API server did not start:\n{self.log()[-3000:]}")
        return self

    def _read(self, listening: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line.rstrip("\n"))
            if line.startswith(LISTENING_PREFIX):
                self.url = line[len(LISTENING_PREFIX) :].strip()
                listening.set()
        listening.set()

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 10.0), **kwargs)

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL."""
        if self.process is None:
            return None
        code = stop_child(self.process, grace_s=timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str | None
    data: str | None  # None for a block without data (a heartbeat)
    comment: bool


def iter_sse(
    client: httpx.Client,
    path: str,
    *,
    deadline_s: float,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Generator[SseEvent, None, None]:
    """SSE blocks from `path` until the caller stops or `deadline_s` passes (heartbeats keep it moving)."""
    deadline = time.monotonic() + deadline_s
    with client.stream("GET", path, params=params, headers=headers, timeout=httpx.Timeout(10.0)) as response:
        response.raise_for_status()
        fields: dict[str, str] = {}
        comment = False
        data: list[str] = []
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                return
            if line == "":
                if fields or data or comment:
                    yield SseEvent(fields.get("id"), fields.get("event"), "\n".join(data) if data else None, comment)
                fields, data, comment = {}, [], False
                continue
            if line.startswith(":"):
                comment = True
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
