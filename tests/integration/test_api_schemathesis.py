"""`schemathesis run --checks all` against a real API process: the served OpenAPI document is exact.

Every operation, the event stream included (its streams end after half a second here), with
positive and negative data, every check schemathesis has (server errors, status codes, content
types, headers and bodies against the document, schema-valid data accepted and schema-invalid
data refused, authentication enforced, unsupported methods, the stateful links), a fixed seed and
a bounded number of examples. The CLI runs in a temporary directory with its database off, so
it writes nothing into the checkout.

Three expectations are configured, each by contract: /readyz answers 503 while no worker
consumes the queue (none runs here); a stream id the schema allows may lie past the stream's
newest event (422); and a request a 202 queued has no state to GET (nor a distribution) until a
worker takes it.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedded.redis_server import RedisServer
from testing.fixtures_api import SUBMIT_TOKEN, ApiServer, api_environment, write_token_file

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 10
SEED = 20261207
CONFIG = """
[[operations]]
include-path = "/readyz"
checks.not_a_server_error.expected-statuses = ["2XX", "3XX", "4XX", "503"]

[[operations]]
include-path = "/v1/events"
checks.positive_data_acceptance.expected-statuses = ["2XX", "401", "403", "404", "409", "422", "429", "5XX"]

[[operations]]
include-path = "/v1/refreshes/{request_id}"
checks.ensure_resource_availability.enabled = false

[[operations]]
include-path = "/v1/refreshes/{request_id}/distribution"
checks.ensure_resource_availability.enabled = false
"""


@pytest.fixture(scope="module")
def fuzzed_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    tokens = write_token_file(tmp / "tokens", {"fuzzer": (SUBMIT_TOKEN, "submit")})
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = api_environment(
        redis_url=redis_server.url,
        key_prefix=prefix,
        queue=f"q-{prefix}",
        extra={
            "SCCM_REFRESH_API__TOKEN_FILE": str(tokens),
            "SCCM_REFRESH_API__READINESS_TIMEOUT_S": "0.2",
            "SCCM_REFRESH_API__EVENT_MAX_DURATION_S": "0.5",
        },
    )
    with ApiServer(env, Path(tmp / "api.log")) as server:
        yield server


def test_schemathesis_with_every_check_finds_nothing(fuzzed_api: ApiServer, tmp_path: Path) -> None:
    """`schemathesis run --checks all --mode all`: no failure, no error, on any operation."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{fuzzed_api.url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            "--header",
            f"Authorization: Bearer {SUBMIT_TOKEN}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested: 12" in result.stdout, result.stdout[-3000:]  # every operation
    assert "Traceback" not in fuzzed_api.log()
