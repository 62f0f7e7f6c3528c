"""The API middleware around stand-in ASGI apps: 401 before the app, 413, the last-resort 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from api.middleware import ACCESS_LOGGER, ERROR_LOGGER, ApiMiddleware
from api.tokens import TokenStore, parse_token_file, token_line

TOKEN = "middleware-token-0123456789"
READ_ONLY = "middleware-read-token-9f8e7d6c5b"
SECRET_TEXT = "password=hunter2 PS100012"


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    principal = scope.get("state", {}).get("principal")
    text = f"{len(body)} {principal.name if principal else '-'}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text})


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError(SECRET_TEXT)


def call(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], method: str, path: str, **kwargs: Any
) -> httpx.Response:
    tokens = TokenStore(
        parse_token_file([token_line(TOKEN, "submit", "reader"), token_line(READ_ONLY, "read", "watcher")])
    )
    wrapped = ApiMiddleware(app, tokens=tokens, max_body_bytes=100)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return anyio.run(run)


def test_v1_paths_need_a_known_token_before_the_app_runs() -> None:
    """No or unknown token: 401 with a Bearer challenge; a known one reaches the app with its principal."""
    refused = call(ok_app, "GET", "/v1/x")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Bearer realm="sccm-refresh"'
    wrong = call(ok_app, "GET", "/v1/x", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    allowed = call(ok_app, "GET", "/v1/x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200 and allowed.text == "0 reader"
    assert call(ok_app, "GET", "/healthz").status_code == 200


def test_bodies_over_the_limit_are_413_declared_or_streamed() -> None:
    """Content-Length over the limit: 413 without calling the app; a longer streamed body: 413 too."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert call(ok_app, "POST", "/v1/x", headers=auth, content=b"x" * 101).status_code == 413
    assert call(ok_app, "POST", "/v1/x", headers=auth, content=b"x" * 100).text == "100 reader"

    async def chunks() -> Any:
        for _ in range(30):
            yield b"xxxxxxxx"

    streamed = call(ok_app, "POST", "/v1/x", headers=auth, content=chunks())
    assert streamed.status_code == 413


def test_an_unhandled_exception_is_a_sanitised_500_logged_by_type(caplog: pytest.LogCaptureFixture) -> None:
    """The body carries an error id and no exception text; the log has the type and id, not the text."""
    with caplog.at_level(logging.ERROR, logger=ERROR_LOGGER):
        response = call(failing_app, "GET", "/healthz")
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "internal error" and len(body["error_id"]) == 16
    assert SECRET_TEXT not in response.text
    assert f"RuntimeError (error_id={body['error_id']})" in caplog.text
    assert "hunter2" not in caplog.text and "Traceback" not in caplog.text


def test_a_read_token_posting_is_403_before_its_body_is_looked_at() -> None:
    """A POST with a read token: 403 even when its body is not JSON, and the app is never called."""
    refused = call(failing_app, "POST", "/v1/x", headers={"Authorization": f"Bearer {READ_ONLY}"}, content=b"{not json")
    assert refused.status_code == 403 and "insufficient_scope" in refused.headers["www-authenticate"]
    assert call(ok_app, "GET", "/v1/x", headers={"Authorization": f"Bearer {READ_ONLY}"}).text == "0 watcher"


def test_two_authorization_headers_are_401_whichever_is_valid() -> None:
    """Two Authorization headers: 401 with error=invalid_request, even when both hold the valid token."""
    headers = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")]
    refused = call(ok_app, "GET", "/v1/x", headers=headers)
    assert refused.status_code == 401 and 'error="invalid_request"' in refused.headers["www-authenticate"]


def test_the_access_log_names_the_caller_and_the_client_address(caplog: pytest.LogCaptureFixture) -> None:
    """One line per request with the token's name and the client's address; never the token."""
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        call(ok_app, "GET", "/v1/x", headers={"Authorization": f"Bearer {TOKEN}"})
        call(ok_app, "GET", "/v1/x")
    assert "401" in caplog.text and "caller=- client=127.0.0.1:123" in caplog.text
    assert "200" in caplog.text and "caller=reader client=127.0.0.1:123" in caplog.text
    assert TOKEN not in caplog.text
