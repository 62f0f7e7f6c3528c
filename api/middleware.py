"""The API's one ASGI middleware: authentication, body size limit, access log, last-resort 500.

Plain ASGI (not BaseHTTPMiddleware: that buffers and breaks streaming). In order:

1. `/v1/...` and `/metrics` need `Authorization: Bearer <token>`: a missing or unknown token, or
   more than one Authorization header, is answered 401 here, before the body is read. The
   principal goes to `request.state.principal`. A POST needs role `submit`: a `read` token is
   403 here too, before its body is parsed (the routes check the role again).
2. A body larger than `max_body_bytes` is 413: at once when Content-Length says so, else as
   soon as the count passes the limit while reading (a chunked body).
3. One access log line per request: method, route template, status, duration, the caller's
   token name and the client's address. No query string, no header, no path parameter (a
   package id or request id), so no token or id is logged.
4. An exception that escapes the app is logged by type with an error id and answered with a
   sanitised 500 carrying that id (when the response has not started).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from api.tokens import ANONYMOUS, Authenticator, Principal

__all__ = ["ACCESS_LOGGER", "ERROR_LOGGER", "ApiMiddleware", "BodyTooLargeError"]

ACCESS_LOGGER: Final = "sccm_refresh.api.access"
ERROR_LOGGER: Final = "sccm_refresh.api.error"
# /metrics is read like any /v1 route: with a token (role read).
PROTECTED_PREFIXES: Final = ("/v1/", "/metrics")
_BEARER: Final = "bearer"
_access_log = logging.getLogger(ACCESS_LOGGER)
_error_log = logging.getLogger(ERROR_LOGGER)


class BodyTooLargeError(HTTPException):
    """Raised from `receive` when a body passes the limit; FastAPI lets HTTPExceptions through."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


class ApiMiddleware:
    def __init__(self, app: ASGIApp, *, tokens: Authenticator | None, max_body_bytes: int) -> None:
        self.app = app
        self.tokens = tokens  # None: --insecure-no-auth (loopback only)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            early = self._refusal(scope)
            if early is not None:
                await early(scope, receive, send_status)
            else:
                await self.app(scope, self._limited(receive), send_status)
        except BodyTooLargeError as exc:
            # Read outside FastAPI's body handling (which answers it itself): still a 413.
            if status == 0:
                await problem_response(413, str(exc.detail))(scope, receive, send_status)
        except Exception as exc:
            error_id = uuid.uuid4().hex[:16]
            _error_log.error("unhandled %s (error_id=%s)", type(exc).__name__, error_id)
            if status == 0:
                response = problem_response(500, "internal error", error_id=error_id)
                await response(scope, receive, send_status)
        finally:
            route = scope.get("route")
            principal = scope.get("state", {}).get("principal")
            client = scope.get("client")
            _access_log.info(
                "%s %s %d %.2fms caller=%s client=%s",
                scope.get("method", "-"),
                getattr(route, "path", "-"),
                status,
                (time.perf_counter() - started) * 1000.0,
                principal.name if isinstance(principal, Principal) else "-",
                f"{client[0]}:{client[1]}" if client else "-",
            )

    def _refusal(self, scope: Scope) -> Any:
        """A response to send without calling the app (401, 413), or None."""
        path: str = scope.get("path", "")
        if path.startswith(PROTECTED_PREFIXES):
            principal = self._principal(scope)
            if principal is None:
                return problem_response(
                    401, "a valid bearer token is required", headers={"WWW-Authenticate": _challenge(scope)}
                )
            scope.setdefault("state", {})["principal"] = principal
            if scope.get("method") == "POST" and not principal.allows("submit"):
                return problem_response(
                    403,
                    "this token's role does not allow this (needs submit)",
                    headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
                )
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return problem_response(413, f"request body larger than {self.max_body_bytes} bytes")
        return None

    def _principal(self, scope: Scope) -> Principal | None:
        if self.tokens is None:
            return ANONYMOUS
        token = _bearer_token(scope)
        return None if token is None else self.tokens.authenticate(token)

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        return receive_limited


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _bearer_token(scope: Scope) -> str | None:
    values = [value for key, value in scope.get("headers", ()) if key == b"authorization"]
    if len(values) != 1:
        # Two Authorization headers: which one a proxy in front checked is anyone's guess.
        return None
    value = values[0].decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != _BEARER:
        return None
    return token.strip() or None


def _challenge(scope: Scope) -> str:
    # RFC 6750 section 3: no error code when the request carried no token at all.
    count = sum(1 for key, _value in scope.get("headers", ()) if key == b"authorization")
    if count == 0:
        return 'Bearer realm="sccm-refresh"'
    if count > 1:
        return 'Bearer realm="sccm-refresh", error="invalid_request"'
    return 'Bearer realm="sccm-refresh", error="invalid_token"'
