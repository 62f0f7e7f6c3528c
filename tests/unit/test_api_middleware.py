"""The API middleware around stand-in ASGI apps: 401 before the app, 413, the last-resort 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from api.middleware import ERROR_LOGGER, ApiMiddleware
from api.tokens import TokenStore, parse_token_file, token_line

TOKEN = "middleware-token-0123456789"
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
    tokens = TokenStore(parse_token_file([token_line(TOKEN, "read", "reader")]))
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
