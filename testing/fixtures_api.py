"""The HTTP API as tests (and the benchmark) use it: a real `sccm-refresh api` process, SSE reading.

    server = ApiServer(env, tmp_path).start()      # `python -m cli.main api --port 0`, stopped by PID
    client = server.client(SUBMIT_TOKEN)           # httpx.Client with the bearer token
    for event in iter_sse(client, "/v1/events", params=..., deadline_s=...): ...

`pipeline_api` serves the API in front of the shared test pipeline (its Redis, queue, prefix),
with a `submit` and a `read` token.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.server import LISTENING_PREFIX
from api.tokens import token_line
from testing.fixtures_pipeline import Pipeline

__all__ = [
    "READ_TOKEN",
    "SUBMIT_TOKEN",
    "ApiServer",
    "SseEvent",
    "api_environment",
    "iter_sse",
    "pipeline_api",
    "write_token_file",
]

SUBMIT_TOKEN = "test-submit-token-5f0c2a9e7b1d4c36"  # noqa: S105 - a test token for a local server
READ_TOKEN = "test-read-token-93e1b7a2c4d85f60"  # noqa: S105 - a test token for a local server
_ENV_PREFIX = "SCCM_REFRESH_"
# Tests want heartbeats (and so deadline checks) often, and short XREAD slices.
FAST_EVENTS_ENV = {
    "SCCM_REFRESH_API__EVENT_HEARTBEAT_S": "0.5",
    "SCCM_REFRESH_API__EVENT_BLOCK_MS": "200",
    "SCCM_REFRESH_API__READINESS_CACHE_S": "0",
}


def write_token_file(path: Path, tokens: Mapping[str, tuple[str, str]]) -> Path:
    """A token file: name -> (token, role)."""
    lines = [token_line(token, role, name) for name, (token, role) in tokens.items()]
    path.write_text("# test tokens\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def api_environment(
    *, redis_url: str, key_prefix: str, queue: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment without its SCCM_REFRESH_* settings, plus the API's own."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(_ENV_PREFIX)}
    env.update(
        {
            f"{_ENV_PREFIX}BROKER_URL": redis_url,
            f"{_ENV_PREFIX}REDIS_URL": redis_url,
            f"{_ENV_PREFIX}KEY_PREFIX": key_prefix,
            f"{_ENV_PREFIX}QUEUE": queue,
            **FAST_EVENTS_ENV,
        }
    )
    env.update(extra or {})
    return env


class ApiServer:
    """`python -m cli.main api ...` in a subprocess: started on a free port, stopped by PID."""

    def __init__(self, env: Mapping[str, str], log_file: Path, *, args: tuple[str, ...] = ()) -> None:
        self.env = dict(env)
        self.log_file = log_file
        self.args = args
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
            [sys.executable, "-m", "cli.main", "api", "--port", "0", *self.args],
            env=self.env,
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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
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


@pytest.fixture(scope="module")
def pipeline_api(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API in front of the module's pipeline, with a `submit` and a `read` token."""
    tmp = tmp_path_factory.mktemp("api")
    tokens = write_token_file(
        tmp / "tokens", {"svc-submit": (SUBMIT_TOKEN, "submit"), "svc-read": (READ_TOKEN, "read")}
    )
    env = api_environment(
        redis_url=pipeline.redis_url,
        key_prefix=pipeline.keys.prefix,
        queue=pipeline.queue,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens)},
    )
    with ApiServer(env, tmp / "api.log") as server:
        yield server
