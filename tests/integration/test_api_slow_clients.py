"""Slow and oversized clients against a real uvicorn: they lose their own connections, nobody else's.

Header and body deadlines (408), header size and count limits (431), the cap per client address,
and the cap on requests in flight, which the health probes are exempt from.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedded.redis_server import RedisServer
from testing.fixtures_api import READ_TOKEN, SUBMIT_TOKEN, ApiServer, api_environment, iter_sse, write_token_file

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 2.0
MAX_HEADER_BYTES = 8192
TRICKLERS = 50
ATTACK_S = 20.0
# The prober and the API's other callers come from 127.0.0.1, the hostile clients from here.
HOSTILE_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token_file(
        tmp_path_factory.mktemp("tokens") / "tokens",
        {"svc-submit": (SUBMIT_TOKEN, "submit"), "svc-read": (READ_TOKEN, "read")},
    )


def start_api(redis_url: str, tokens: Path, log_dir: Path, extra: dict[str, str]) -> ApiServer:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = api_environment(
        redis_url=redis_url,
        key_prefix=prefix,
        queue=f"q-{prefix}",
        extra={"SCCM_REFRESH_API__TOKEN_FILE": str(tokens), **extra},
    )
    return ApiServer(env, log_dir / f"api-{prefix}.log").start()


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tokens_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Short deadlines, small header limit, and the issue's MAX_CONNECTIONS=40."""
    server = start_api(
        redis_server.url,
        tokens_file,
        tmp_path_factory.mktemp("api"),
        {
            "SCCM_REFRESH_API__MAX_CONNECTIONS": "40",
            "SCCM_REFRESH_API__MAX_EVENT_STREAMS": "4",
            "SCCM_REFRESH_API__MAX_CONNECTIONS_PER_CLIENT": "60",
            "SCCM_REFRESH_API__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "SCCM_REFRESH_API__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            "SCCM_REFRESH_API__MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        },
    )
    yield server
    server.stop()


def address(api: ApiServer) -> tuple[str, int]:
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def hostile_socket(api: ApiServer, *, source: str = HOSTILE_ADDRESS) -> socket.socket:
    conn = socket.socket()
    conn.bind((source, 0))
    conn.settimeout(10)
    conn.connect(address(api))
    return conn


def reply_of(conn: socket.socket) -> str:
    """What the server sent before closing (empty when it just closed)."""
    chunks = []
    while True:
        try:
            chunk = conn.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


class Tricklers:
    """`count` sockets sending one header byte each every half second, reopened when the server closes one."""

    def __init__(self, api: ApiServer, count: int) -> None:
        self.api = api
        self.count = count
        self.timed_out = 0  # 408s received
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tricklers", daemon=True)

    def __enter__(self) -> Tricklers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _open(self) -> socket.socket:
        conn = hostile_socket(self.api)
        conn.setblocking(False)
        return conn

    def _run(self) -> None:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000
        conns = {self._open(): 0 for _ in range(self.count)}
        try:
            while not self.stop.wait(0.5):
                for conn, sent in list(conns.items()):
                    try:
                        reply = conn.recv(4096)
                    except BlockingIOError:
                        reply = None
                    except OSError:
                        reply = b""
                    if reply is not None:  # the server answered (408) or closed: open another
                        self.timed_out += reply.startswith(b"HTTP/1.1 408")
                        conn.close()
                        del conns[conn]
                        conns[self._open()] = 0
                        continue
                    try:
                        conn.send(request[sent % len(request) : sent % len(request) + 1])
                        conns[conn] = sent + 1
                    except OSError:
                        pass
        finally:
            for conn in conns:
                conn.close()


def test_fifty_trickling_sockets_for_twenty_seconds_leave_health_and_routes_answering(api: ApiServer) -> None:
    """50 sockets trickle header bytes (reopened when cut off): /healthz and a /v1 route answer in 1 s, each second."""
    with Tricklers(api, TRICKLERS) as tricklers:
        ends = time.monotonic() + ATTACK_S
        probes = 0
        while time.monotonic() < ends:
            started = time.monotonic()
            with httpx.Client(base_url=api.url, timeout=1.0) as client:
                health = client.get("/healthz")
                read = client.get("/v1/refreshes/no-such-request", headers={"Authorization": f"Bearer {READ_TOKEN}"})
            took_s = time.monotonic() - started
            assert health.status_code == 200 and read.status_code == 404, (health.text, read.text)
            assert took_s < 1.0, took_s
            probes += 1
            time.sleep(max(0.0, 1.0 - took_s))
        timed_out = tricklers.timed_out
    assert probes >= ATTACK_S - 2
    # Each trickler was cut off at the header deadline (and reopened) several times over.
    assert timed_out >= TRICKLERS * 3, timed_out


def test_a_body_trickled_past_its_deadline_is_408(api: ApiServer) -> None:
    """Headers in time, then one body byte per half second: 408 once the body deadline passes."""
    conn = hostile_socket(api)
    try:
        conn.sendall(
            b"POST /v1/refreshes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {SUBMIT_TOKEN}\r\nContent-Length: 100\r\n\r\n".encode()
        )
        started = time.monotonic()
        conn.settimeout(0.5)
        reply = b""
        while not reply and time.monotonic() - started < BODY_TIMEOUT_S + 5:
            try:
                conn.send(b" ")
                reply = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        took_s = time.monotonic() - started
    finally:
        conn.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert BODY_TIMEOUT_S - 0.5 <= took_s <= BODY_TIMEOUT_S + 2, took_s


def test_huge_or_numerous_headers_are_431_and_the_connection_closed(api: ApiServer) -> None:
    """An 8 MB Authorization header and 20,000 header lines: 431, without reading them all."""
    huge = hostile_socket(api)
    try:
        huge.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        with contextlib.suppress(OSError):  # the server closes while we still send: what we want
            for _ in range(8 * 1024):
                huge.sendall(b"a" * 1024)
        assert reply_of(huge).startswith("HTTP/1.1 431")
    finally:
        huge.close()
    many = hostile_socket(api)
    try:
        headers = b"".join(b"X-%d: 1\r\n" % i for i in range(20_000))
        with contextlib.suppress(OSError):  # the server may close while we still send
            many.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert reply_of(many).startswith("HTTP/1.1 431")
    finally:
        many.close()
    with api.client() as client:
        assert client.get("/healthz").status_code == 200


def test_the_access_log_names_each_refusal_and_its_client(api: ApiServer) -> None:
    """Protocol-level refusals are logged with status and address, never the request's bytes."""
    conn = hostile_socket(api)
    try:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nX-Secret-Marker: " + b"s" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n")
        assert reply_of(conn).startswith("HTTP/1.1 431")
    finally:
        conn.close()
    log = api.log()
    assert f"431 - caller=- client={HOSTILE_ADDRESS}:" in log
    assert "X-Secret-Marker" not in log


@pytest.fixture(scope="module")
def capped_api(
    redis_server: RedisServer, tokens_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """Two requests in flight at most, five connections per address."""
    server = start_api(
        redis_server.url,
        tokens_file,
        tmp_path_factory.mktemp("capped"),
        {
            "SCCM_REFRESH_API__MAX_CONNECTIONS": "2",
            "SCCM_REFRESH_API__MAX_EVENT_STREAMS": "2",
            "SCCM_REFRESH_API__MAX_CONNECTIONS_PER_CLIENT": "5",
        },
    )
    yield server
    server.stop()


def test_a_client_address_past_its_connection_cap_is_refused_and_others_are_not(capped_api: ApiServer) -> None:
    """Five idle sockets from one address: its sixth gets 503 at once; another address is served."""
    held = [hostile_socket(capped_api) for _ in range(5)]
    try:
        sixth = hostile_socket(capped_api)
        try:
            assert reply_of(sixth).startswith("HTTP/1.1 503")
        finally:
            sixth.close()
        with capped_api.client() as client:
            assert client.get("/healthz").status_code == 200
    finally:
        for conn in held:
            conn.close()


def test_with_every_request_slot_taken_health_probes_still_answer(capped_api: ApiServer) -> None:
    """Two event streams fill the in-flight cap: /v1 routes get 503 with Retry-After; /healthz and /readyz answer."""
    with capped_api.client(READ_TOKEN) as first, capped_api.client(READ_TOKEN) as second:
        streams = [iter_sse(client, "/v1/events", deadline_s=30) for client in (first, second)]
        for stream in streams:
            next(stream)
        with capped_api.client(READ_TOKEN) as client:
            busy = client.get("/v1/refreshes/no-such-request")
            assert busy.status_code == 503 and busy.headers["Retry-After"], busy.text
            assert busy.json()["detail"]
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.json()["status"] in {"ready", "not_ready"}
        for stream in streams:
            stream.close()
