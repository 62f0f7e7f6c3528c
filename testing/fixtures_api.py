"""Fixtures for the HTTP API: tokens, the API's environment, and `pipeline_api`.

The process and SSE helpers live in testing/api_process.py (re-exported here). `pipeline_api`
serves the API in front of the shared test pipeline (its Redis, queue, prefix), with two
`submit` tokens (svc-submit, svc-other) and a `read` token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from api.tokens import token_line
from testing.api_process import ApiServer, SseEvent, iter_sse
from testing.fixtures_pipeline import Pipeline

__all__ = [
    "OTHER_SUBMIT_TOKEN",
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
OTHER_SUBMIT_TOKEN = "test-other-token-0a7d3e91c5b24f68"  # noqa: S105 - a second submitter (svc-other)
READ_TOKEN = "test-read-token-93e1b7a2c4d85f60"  # noqa: S105 - a test token for a local server
_ENV_PREFIX = "SCCM_REFRESH_"
# Tests want heartbeats (and so deadline checks) often, and short XREAD slices.
FAST_EVENTS_ENV = {
    "SCCM_REFRESH_API__EVENT_HEARTBEAT_S": "0.5",
    "SCCM_REFRESH_API__EVENT_BLOCK_MS": "200",
    "SCCM_REFRESH_API__READINESS_CACHE_S": "0",
}


def write_token_file(path: Path, tokens: Mapping[str, tuple[str, str]]) -> Path:
    """A token file: name -> (token, role), writable by its owner only (the API refuses others)."""
    lines = [token_line(token, role, name) for name, (token, role) in tokens.items()]
    path.write_text("# test tokens\n" + "\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
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


@pytest.fixture(scope="module")
def pipeline_api(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API in front of the module's pipeline, with two `submit` tokens and a `read` token."""
    tmp = tmp_path_factory.mktemp("api")
    tokens = write_token_file(
        tmp / "tokens",
        {
            "svc-submit": (SUBMIT_TOKEN, "submit"),
            "svc-other": (OTHER_SUBMIT_TOKEN, "submit"),
            "svc-read": (READ_TOKEN, "read"),
        },
    )
    env = api_environment(
        redis_url=pipeline.redis_url,
        key_prefix=pipeline.keys.prefix,
        queue=pipeline.queue,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens)},
    )
    with ApiServer(env, tmp / "api.log") as server:
        yield server
