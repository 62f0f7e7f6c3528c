"""uvicorn's httptools protocol with the deadlines and limits it lacks: slow and oversized clients.

uvicorn reads a request's headers and body with no deadline, parses headers of any size and
number, and its `limit_concurrency` counts connections that have not finished sending their
request, so a few sockets trickling bytes keep every route at 503. `guarded_protocol(limits)`
is the same protocol with:

* a header deadline: the request line and headers within `header_timeout_s` of the request's
  first byte (of the connection, for its first request); else 408 and the connection closed;
* a body deadline: the body within `body_timeout_s` of the headers; else 408 and closed (the app
  sees the client gone);
* header limits: at most `max_header_bytes` of request line and headers and `max_headers` lines,
  counted as they arrive (the parser holds at most one read beyond the limit): 431 and closed;
* a cap per client address: a connection past `max_per_client` open ones from its address is
  answered 503 and closed before anything is read;
* an in-flight cap: past `max_in_flight` requests being served (headers in, response not
  finished), 503 with Retry-After for every path but the exempt ones (the health probes), which
  are always served. A connection still sending its request does not count;
* `ABORT_EXTENSION` in the scope's extensions: `abort()` drops the connection at once, for a
  response whose client stopped reading (closing would wait for a flush that never comes).

The refusals are answered here, below the app, so each is logged here: one access log line
with the status, the reason and the client's address.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import httptools
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from api.middleware import ACCESS_LOGGER

__all__ = ["ABORT_EXTENSION", "ConnectionLimits", "guarded_protocol"]

ABORT_EXTENSION: Final = "sccm_refresh.abort"
_RETRY_AFTER_S: Final = b"2"
_access_log = logging.getLogger(ACCESS_LOGGER)


@dataclass(frozen=True)
class ConnectionLimits:
    """What the protocol enforces (from `ApiSettings`; see the module docstring)."""

    max_in_flight: int
    max_per_client: int  # 0: no cap
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_headers: int
    exempt_paths: frozenset[str] = frozenset()


class _RefusalError(Exception):
    """Raised from a parser callback: answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)`; one per server (it counts per address)."""

    class Guarded(_GuardedProtocol):
        _limits = limits
        _exempt = frozenset(path.encode() for path in limits.exempt_paths)
        _per_client: ClassVar[Counter[str]] = Counter()

    return Guarded


class _GuardedProtocol(HttpToolsProtocol):
    _limits: ClassVar[ConnectionLimits]
    _exempt: ClassVar[frozenset[bytes]]
    _per_client: ClassVar[Counter[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_headers = True  # until the headers are in; again once the body is
        self._read_bytes = 0  # bytes received while reading headers (one read's worth at most unparsed)
        self._header_bytes = 0  # request line and header lines parsed
        self._header_lines = 0
        self._address: str | None = None  # counted in _per_client

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        cap = self._limits.max_per_client
        if address is not None and cap:
            if self._per_client[address] >= cap:
                self._refuse(503, f"more than {cap} connections from this address")
                return
            self._per_client[address] += 1
            self._address = address
        self._arm(self._limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._address is not None:
            self._per_client[self._address] -= 1
            if self._per_client[self._address] <= 0:
                del self._per_client[self._address]
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but a refusal raised in a callback is answered as such, not as a 400.
        self._unset_keepalive_if_required()
        if self._reading_headers:
            self._read_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _RefusalError):
                self._refuse(refusal.status, refusal.reason)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._reading_headers and self._read_bytes > self._limits.max_header_bytes:
            self._refuse(431, f"request line and headers longer than {self._limits.max_header_bytes} bytes")

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_lines = 0
        self.scope["extensions"] = {ABORT_EXTENSION: {"abort": self._abort}}
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self._limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self._limits.max_headers:
            raise _RefusalError(431, f"more than {self._limits.max_headers} header lines")
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._read_bytes = 0
        self._disarm()
        app = self.app
        if len(self.tasks) >= self._limits.max_in_flight and httptools.parse_url(self.url).path not in self._exempt:
            self.app = _busy
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        self._arm(self._limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._reading_headers = True

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._limits.max_header_bytes:
            raise _RefusalError(431, f"request line and headers longer than {self._limits.max_header_bytes} bytes")

    # -- deadlines and refusals ------------------------------------------------------------

    def _arm(self, delay_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay_s, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if self._reading_headers and idle:
            self._refuse(408, f"request headers not received within {self._limits.header_timeout_s:g} s")
        elif not self._reading_headers and cycle is not None and not cycle.response_started:
            # The app is waiting for the body: it reads "disconnected" and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(408, f"request body not received within {self._limits.body_timeout_s:g} s")
        else:
            # A response is under way on this connection: no room for a 408.
            _access_log.info("- - 408 - caller=- client=%s (request not received in time)", self._peer())
            self._abort()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` (a JSON problem) and close; nothing more is read."""
        self._disarm()
        _access_log.info("- - %d - caller=- client=%s (%s)", status, self._peer(), reason)
        body = json.dumps({"detail": reason, "error_id": None}).encode()
        head = [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if status == 503:
            head.append(b"retry-after: " + _RETRY_AFTER_S + b"\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()

    def _abort(self) -> None:
        self._disarm()
        self.transport.abort()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"


async def _busy(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The in-flight cap's answer (the app is not called)."""
    body = json.dumps({"detail": "the server is at its limit of requests in flight; retry later", "error_id": None})
    _access_log.info(
        "%s - 503 - caller=- client=%s (requests in flight at the limit)", scope.get("method", "-"), _client(scope)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", _RETRY_AFTER_S),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode(), "more_body": False})


def _client(scope: Scope) -> str:
    client: Any = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"
