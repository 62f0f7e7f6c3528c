"""`/v1/events` against callers that hold on: stalled readers, one caller's share, replays, bad ids.

A real uvicorn and a real Redis: the outcome stream is filled with XADD as the workers write it.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from embedded.redis_server import RedisServer
from testing.fixtures_api import READ_TOKEN, SUBMIT_TOKEN, ApiServer, api_environment, iter_sse, write_token_file
from testing.waiting import wait_until
from worker.stores import keys as k
from worker.stores.keys import RedisKeys

pytestmark = pytest.mark.integration

MAX_DURATION_S = 5.0
SEND_TIMEOUT_S = 2.0
# Enough to fill a client's small receive window, the kernel's send buffer and the transport's.
BACKLOG = 10_000


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Three stream slots, two per caller, two replays; 5 s streams, 2 s send timeout."""
    tmp = tmp_path_factory.mktemp("events")
    tokens = write_token_file(
        tmp / "tokens", {"svc-submit": (SUBMIT_TOKEN, "submit"), "svc-read": (READ_TOKEN, "read")}
    )
    env = api_environment(
        redis_url=redis_server.url,
        key_prefix=prefix,
        queue=f"q-{prefix}",
        extra={
            "SCCM_REFRESH_API__TOKEN_FILE": str(tokens),
            "SCCM_REFRESH_API__MAX_EVENT_STREAMS": "3",
            "SCCM_REFRESH_API__MAX_EVENT_STREAMS_PER_CALLER": "2",
            "SCCM_REFRESH_API__MAX_EVENT_REPLAYS": "2",
            "SCCM_REFRESH_API__EVENT_MAX_DURATION_S": str(MAX_DURATION_S),
            "SCCM_REFRESH_API__EVENT_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        },
    )
    with ApiServer(env, tmp / "api.log") as server:
        yield server


@pytest.fixture(scope="module")
def newest_id(redis_server: RedisServer, prefix: str) -> str:
    """The outcome stream holding BACKLOG events of about 1 KB; the id of the newest."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    stream = RedisKeys(prefix).outcome_stream
    try:
        pipe = client.pipeline(transaction=False)
        for index in range(BACKLOG):
            outcome = json.dumps({"request_id": f"r{index}", "padding": "x" * 1000})
            pipe.xadd(
                stream,
                {
                    k.STREAM_FIELD_KIND: "request",
                    k.STREAM_FIELD_REQUEST_ID: f"r{index}",
                    k.STREAM_FIELD_SITE_CODE: "PS1",
                    k.STREAM_FIELD_OUTCOME: outcome,
                },
            )
        ids = pipe.execute()
    finally:
        client.close()
    return str(ids[-1])


def stalled_reader(api: ApiServer, token: str) -> socket.socket:
    """A client that asks for a full replay, then never reads (a tiny receive window)."""
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect((host, int(port)))
    conn.sendall(
        f"GET /v1/events?after=0-0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode("ascii")
    )
    return conn


def opens(api: ApiServer, token: str, **params: str) -> int:
    """The status a stream request gets (the stream itself is closed at once)."""
    with api.client(token) as client, client.stream("GET", "/v1/events", params=params) as response:
        return response.status_code


def test_stalled_readers_lose_their_slots_within_the_stream_deadline(api: ApiServer, newest_id: str) -> None:
    """Two readers that stop reading a replay hold their slots for the send timeout, not forever.

    While they hold them: the same token's third stream is 429, another caller's replay is 503
    (both replay permits taken), another caller's live stream opens.
    """
    stalled = [stalled_reader(api, READ_TOKEN) for _ in range(2)]
    started = time.monotonic()
    try:
        assert wait_until(lambda: opens(api, READ_TOKEN) == 429, timeout_s=5, poll_s=0.1)
        assert opens(api, SUBMIT_TOKEN, after="0-0") == 503
        assert opens(api, SUBMIT_TOKEN) == 200
        assert wait_until(lambda: opens(api, READ_TOKEN) == 200, timeout_s=MAX_DURATION_S, poll_s=0.2)
        freed_after_s = time.monotonic() - started
    finally:
        for conn in stalled:
            conn.close()
    assert freed_after_s < MAX_DURATION_S, freed_after_s
    assert "Traceback" not in api.log() and "without completing response" not in api.log()


def test_event_ids_past_64_bits_or_past_the_newest_event_are_422(api: ApiServer, newest_id: str) -> None:
    """Parts over 2**64 - 1 and ids after the stream's newest entry are refused; the newest itself is fine."""
    ms, _, seq = newest_id.partition("-")
    future = f"{int(ms) + 1}-0"
    with api.client(READ_TOKEN) as client:
        for headers, params, loc in (
            ({"Last-Event-ID": "99999999999999999999-0"}, {}, ["header", "Last-Event-ID"]),
            ({"Last-Event-ID": future}, {}, ["header", "Last-Event-ID"]),
            ({}, {"after": f"{ms}-{int(seq) + 1}"}, ["query", "after"]),
        ):
            response = client.get("/v1/events", headers=headers, params=params)
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == loc
        events = iter_sse(client, "/v1/events", headers={"Last-Event-ID": newest_id}, deadline_s=10)
        assert next(events).comment is False  # the retry: block, then the stream
        events.close()
    assert "RuntimeError" not in api.log()


def test_a_replay_reads_the_backlog_in_order_and_ends_at_its_deadline(api: ApiServer, newest_id: str) -> None:
    """A reading client gets the whole backlog, in order, then the stream ends by itself."""
    seen = 0
    last = ""
    started = time.monotonic()
    with api.client(READ_TOKEN, timeout=30) as client:
        for event in iter_sse(client, "/v1/events", params={"after": "0-0"}, deadline_s=MAX_DURATION_S + 10):
            if event.event == "outcome":
                seen += 1
                last = event.id or last
    assert seen == BACKLOG and last == newest_id
    assert time.monotonic() - started < MAX_DURATION_S + 3
