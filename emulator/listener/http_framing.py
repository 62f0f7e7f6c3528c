"""HTTP/1.1 as HTTP.sys frames it, for the emulator's listener (no WS-Man, no authentication).

* Request lines up to 64 KiB; bodies sized (Content-Length) or chunked ([RFC 9112] 7.1). A
  WS-Man POST with neither is 411, a body over the limit 413, another transfer coding 501,
  both framings at once 400; the connection closes after any of them (its framing is lost).
* Replies carry `Server: Microsoft-HTTPAPI/2.0` and go out in one send (no Nagle stall); the
  error pages are HTTP.sys's own.
* Keep-alive connections idle for `idle_timeout_s` are closed, as HTTP.sys does.
* The server tracks its connections so `close_all_connections` can wake and end them all.

`HttpSysHandler` is the base of the listener's handler (emulator.listener.handler): it owns the
request loop, CPU accounting per request marked as an operation, and the I/O helpers.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import socket
import ssl
import struct
import sys
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

from emulator.stats import ServerStats

__all__ = ["HTML_CONTENT_TYPE", "SERVER_HEADER", "HttpSysHandler", "HttpSysServer", "httpsys_page"]

log = logging.getLogger(__name__)
# The request log keeps the listener's historical name, whichever module writes it: operators
# (and the CLI test at --log-level DEBUG) filter on it.
access_log = logging.getLogger("emulator.server")

SERVER_HEADER: Final = "Microsoft-HTTPAPI/2.0"
HTML_CONTENT_TYPE: Final = "text/html; charset=us-ascii"
# HTTP.sys's own error page (what a client sees when the request never reaches WinRM).
_HTTPSYS_ERROR_PAGE: Final = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    "<HTML><HEAD><TITLE>{title}</TITLE>\r\n"
    '<META HTTP-EQUIV="Content-Type" Content-Type="text/html; charset=us-ascii"></HEAD>\r\n'
    "<BODY><h2>{title}</h2>\r\n"
    "<hr><p>HTTP Error {status}. {text}</p>\r\n"
    "</BODY></HTML>\r\n"
)
_HTTPSYS_TEXTS: Final = {
    404: ("Not Found", "The requested resource is not found."),
    405: ("Method Not Allowed", "The request method is not supported."),
    411: ("Length Required", "The request must be chunked or have a content length."),
    413: ("Request Entity Too Large", "The page was not displayed because the request entity is too large."),
    503: ("Service Unavailable", "The service is unavailable."),
}
_MAX_REQUEST_LINE_BYTES: Final = 65_536
# Chunked request bodies: size lines and trailers are bounded like request lines.
_MAX_CHUNK_LINE_BYTES: Final = 1_024
_MAX_TRAILER_LINES: Final = 64
_CHUNK_SIZE_RE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CRLF: Final = b"\r\n"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def httpsys_page(status: int) -> bytes:
    """HTTP.sys's error page for 404, 405, 411, 413 or 503."""
    title, text = _HTTPSYS_TEXTS[status]
    return _HTTPSYS_ERROR_PAGE.format(title=title, status=status, text=text).encode("ascii")


def _chunked_refusal(transfer_encoding: str, content_length: str | None) -> int | None:
    """The status refusing a Transfer-Encoding request, or None when its chunked body can be read."""
    if transfer_encoding.strip().lower() != "chunked":
        return 501  # no other coding is implemented ([RFC 9112] 6.1)
    if content_length is not None:
        return 400  # both framings at once is how requests are smuggled ([RFC 9112] 6.3)
    return None


def _content_length(text: str) -> int | None:
    """Content-Length as a non-negative int, None when malformed."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        return None
    return int(stripped)


class HttpSysServer(http.server.ThreadingHTTPServer):
    """A thread per connection, TLS handshakes in that thread, every connection tracked."""

    daemon_threads = True
    block_on_close = False  # close_all_connections() + joining the threads is the owner's job
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[HttpSysHandler],
        *,
        ssl_context: ssl.SSLContext | None,
        idle_timeout_s: float,
        stats: ServerStats,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.ssl_context = ssl_context
        self.idle_timeout_s = idle_timeout_s
        self.stats = stats
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.connections_lock = threading.Lock()
        self.closing = False
        super().__init__(address, handler_class)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Client aborts, resets and TLS handshake failures are routine; anything else is a bug.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended with an error", client_address, exc_info=True)
        else:
            log.exception("unexpected error serving %s", client_address)

    def close_all_connections(self) -> list[threading.Thread]:
        """Shut every connection down; returns their threads, for the caller to join."""
        with self.connections_lock:
            self.closing = True  # a handler still in setup() closes its own connection
            live = list(self.connections.items())
        for sock, _thread in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return [thread for _sock, thread in live]


class HttpSysHandler(http.server.BaseHTTPRequestHandler):
    """One instance per TCP connection; subclasses implement `handle_request`."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_HEADER
    sys_version = ""
    disable_nagle_algorithm = True
    server: HttpSysServer

    def setup(self) -> None:
        self.stats = self.server.stats
        self.idle_closed = False
        self.was_reset = False
        self.operation_ran = False  # set by the subclass: this request's CPU is an operation's
        self.final_auth_header: str | None = None
        # The idle timeout is the socket timeout (an SSLSocket inherits it from the plain one).
        self.request.settimeout(self.server.idle_timeout_s)
        if self.server.ssl_context is not None:
            # Handshake here, in the connection's thread, so a slow client cannot block accept().
            self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        super().setup()
        with self.server.connections_lock:
            self.server.connections[self.connection] = threading.current_thread()
            if self.server.closing:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
        self.stats.incr("connections_opened")

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.pop(self.connection, None)
        if not self.was_reset:
            with contextlib.suppress(OSError):
                super().finish()
        # Close here: with TLS the server only holds the detached plain socket. Closing before
        # counting an idle close means a test awaiting the counter knows the FIN is on its way.
        with contextlib.suppress(OSError):
            self.connection.close()
        if self.idle_closed:
            self.stats.incr("idle_closes")

    def handle_one_request(self) -> None:
        # A copy of the stdlib loop body that also tells an idle timeout (no request started)
        # from other errors and measures CPU per WS-Man operation. thread_time() does not
        # advance while the thread blocks reading, so starting before readline is fair.
        self.operation_ran = False
        self.final_auth_header = None
        cpu_start_s = time.thread_time()
        try:
            self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE_BYTES + 1)
        except TimeoutError:
            self.idle_closed = True
            self.close_connection = True
            return
        if len(self.raw_requestline) > _MAX_REQUEST_LINE_BYTES:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        if self.command not in _METHODS:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")
            return
        try:
            self.handle_request()
            if not self.was_reset:
                self.wfile.flush()
        finally:
            if self.operation_ran:
                self.stats.record_operation(time.thread_time() - cpu_start_s)

    def handle_request(self) -> None:
        """Answer one parsed request (`command`, `path`, `headers`; the body is still unread)."""
        raise NotImplementedError

    # -- I/O helpers ----------------------------------------------------------------------------

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        www_authenticate: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        """Write status line, headers and body in one send (no Nagle/delayed-ACK stall)."""
        reason = HTTPStatus(status).phrase
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {SERVER_HEADER}",
            f"Date: {formatdate(usegmt=True)}",
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        if www_authenticate is None and self.final_auth_header is not None:
            # SPNEGO's last leg: the accept-completed token rides on the answer to the request.
            www_authenticate = [self.final_auth_header]
        lines.extend(f"WWW-Authenticate: {value}" for value in www_authenticate or [])
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # Counted before the write: a client that has read the reply must find it counted.
        self.stats.incr(f"http_{status}")
        self.wfile.write(head + body if self.command != "HEAD" else head)
        self.log_request(status, len(body))

    def read_body(self, limit: int, *, length_required: bool = False) -> bytes | None:
        """The request body, or None after answering 400/411/413/501 (then the connection closes).

        Like HTTP.sys: chunked bodies are accepted; a POST with neither Content-Length nor
        chunked coding is 411 when `length_required` (WS-Man); otherwise it has no body.
        """
        transfer_encoding = self.headers.get("Transfer-Encoding")
        length_text = self.headers.get("Content-Length")
        refusal: int | None
        if transfer_encoding is not None:
            refusal = _chunked_refusal(transfer_encoding, length_text)
            if refusal is None:
                return self._read_chunked(limit)
        elif length_text is None:
            if not (length_required and self.command == "POST"):
                return b""
            refusal = 411
        else:
            length = _content_length(length_text)
            refusal = 400 if length is None else 413 if length > limit else None
            if length is not None and refusal is None:
                return self.rfile.read(length) if length else b""
        self._refuse_body(refusal or 400)
        return None

    def _read_chunked(self, limit: int) -> bytes | None:
        """Decode a chunked body ([RFC 9112] 7.1): size lines, data + CRLF, `0`, trailers, CRLF."""
        body = bytearray()
        # Bounded: every chunk but the last carries at least one byte of a body capped at `limit`.
        for _ in range(limit + 2):
            line = self.rfile.readline(_MAX_CHUNK_LINE_BYTES + 1)
            size_match = _CHUNK_SIZE_RE.fullmatch(line.split(b";", 1)[0].strip())
            if len(line) > _MAX_CHUNK_LINE_BYTES or not line.endswith(b"\n") or size_match is None:
                self._refuse_body(400)
                return None
            size = int(size_match.group(), 16)
            if size == 0:
                if self._skip_trailers():
                    return bytes(body)
                self._refuse_body(400)
                return None
            if len(body) + size > limit:
                self._refuse_body(413)
                return None
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.read(len(_CRLF)) != _CRLF:
                self._refuse_body(400)
                return None
            body += data
        self._refuse_body(400)
        return None

    def _skip_trailers(self) -> bool:
        for _ in range(_MAX_TRAILER_LINES):
            line = self.rfile.readline(_MAX_CHUNK_LINE_BYTES + 1)
            if line in (_CRLF, b"\n"):
                return True
            if not line.endswith(b"\n"):
                return False
        return False

    def _refuse_body(self, status: int) -> None:
        """Answer a request whose body cannot be read; the connection closes (its framing is lost)."""
        self.close_connection = True
        if status in _HTTPSYS_TEXTS:
            self.respond(status, httpsys_page(status), HTML_CONTENT_TYPE)
        else:
            self.respond(status)

    def discard_body(self, limit: int) -> bool:
        """Read and drop the body; False when it could not be read (the error is already answered)."""
        # Keep the connection usable: an unread body would be parsed as the next request.
        return self.read_body(limit) is not None

    def reset_connection(self) -> None:
        """Abort the TCP connection with RST (SO_LINGER 0), as a dropped connection looks."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.was_reset = True
        self.close_connection = True
        self.stats.incr("connection_resets")

    def version_string(self) -> str:
        return SERVER_HEADER

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines and statuses only: headers (and so credentials) are never logged.
        access_log.debug("%s %s", self.address_string(), format % args)
