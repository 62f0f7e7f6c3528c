"""A bulk refresh through the HTTP API, for the chaos suite and the benchmarks.

    with BulkApi(worker_env, workdir) as api:      # `sccm-refresh api` in a child process, a submit token
        bulk_id = api.submit({"site_code": "PS1", "pkg_source_flags": [2]})
        status = api.status(bulk_id)                # GET /v1/bulk-refreshes/{id}: state, counts

The API runs with the workers' own environment (broker, store, key prefix, queue, the sites'
providers), so it knows the site a bulk names. Stopped by PID.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from api.tokens import token_line
from testing.api_process import ApiServer

__all__ = ["BULK_ROUTE", "OVER_STATES", "BulkApi"]

BULK_ROUTE: Final = "/v1/bulk-refreshes"
# A bulk in one of these states changes no more.
OVER_STATES: Final = frozenset({"done", "cancelled", "failed"})
_TOKEN_BYTES: Final = 24


class BulkApi:
    """The API in front of a pipeline, with one submit token; `close()` stops it."""

    def __init__(self, worker_env: Mapping[str, str], workdir: Path, *, extra: Mapping[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._token = secrets.token_urlsafe(_TOKEN_BYTES)
        token_file = workdir / "api-tokens"
        token_file.touch(mode=0o600)
        token_file.write_text(token_line(self._token, "submit", "bulk-submitter") + "\n", encoding="utf-8")
        env = {**worker_env, "SCCM_REFRESH_API__TOKEN_FILE": str(token_file), **(extra or {})}
        self.server = ApiServer(env, workdir / "api.log")
        self._client: httpx.Client | None = None

    def start(self) -> BulkApi:
        self.server.start()
        self._client = self.server.client(self._token)
        return self

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("the API is not started")
        return self._client

    def submit(self, criteria: Mapping[str, Any]) -> str:
        """POST the bulk; its id (RuntimeError unless the API answers 202)."""
        response = self.client.post(BULK_ROUTE, json=dict(criteria))
        if response.status_code != 202:
            raise RuntimeError(f"bulk refused: {response.status_code} {response.text[:500]}")
        return str(response.json()["bulk_id"])

    def status(self, bulk_id: str) -> dict[str, Any]:
        """The bulk's state and counts as the API reports them (RuntimeError on anything but 200)."""
        response = self.client.get(f"{BULK_ROUTE}/{bulk_id}")
        if response.status_code != 200:
            raise RuntimeError(f"bulk status: {response.status_code} {response.text[:500]}")
        status: dict[str, Any] = response.json()
        return status

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.server.stop()

    def __enter__(self) -> BulkApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
