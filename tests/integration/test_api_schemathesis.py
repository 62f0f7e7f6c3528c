"""Schemathesis against the served OpenAPI document: no 5xx, every response matches its declaration.

A real uvicorn process and Redis (no worker: what is enqueued waits in the test's own queue).
Positive and negative cases, a bounded number per operation, with a `submit` token. Checks:
no server error, documented status codes, content types, headers and response bodies.
`GET /v1/events` is left out: it streams until its time limit, which a request/response fuzzer
cannot consume; tests/integration/test_api_http.py and test_api_pipeline.py cover it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import CacheConfig, SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from config.settings import Settings
from embedded.redis_server import RedisServer
from testing.fixtures_api import SUBMIT_TOKEN, ApiServer, api_environment, write_token_file

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 12
EVENTS_PATH = "/v1/events"
READY_PATH = "/readyz"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    tokens = write_token_file(tmp / "tokens", {"fuzzer": (SUBMIT_TOKEN, "submit")})
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = api_environment(
        redis_url=redis_server.url,
        key_prefix=prefix,
        queue=f"q-{prefix}",
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens), "SCCM_REFRESH_API__READINESS_TIMEOUT_S": "0.2"},
    )
    with ApiServer(env, Path(tmp / "api.log")) as server:
        yield server


def cases() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation the app declares but the event stream.

    Negative cases only where there is input to break (parameters or a body).
    """
    document = create_app(Settings(), tokens=None).openapi()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path == EVENTS_PATH:
                continue
            found.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                found.append((method.upper(), path, GenerationMode.NEGATIVE))
    return sorted(found)


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: ApiServer) -> Any:
    # No cache: schemathesis would otherwise keep one in .schemathesis/ under the working directory
    # (the checkout); the suite writes nothing there.
    config = SchemathesisConfig(cache=CacheConfig(enabled=False))
    schema = schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json", config=config)
    schema.config.generation.update(max_examples=MAX_EXAMPLES)
    return schema


@pytest.mark.parametrize(("method", "path", "mode"), cases())
def test_every_operation_answers_as_its_schema_declares(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    """Generated requests (valid and invalid) get no 5xx and only documented, well-formed responses."""
    operation = api_schema[path][method]
    # /readyz answers 503 by contract when no worker consumes the queue (none here): its status
    # is still checked against the document.
    checks = [c for c in CHECKS if c is not not_a_server_error] if path == READY_PATH else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {SUBMIT_TOKEN}"}, checks=checks, timeout=10)

    check()
