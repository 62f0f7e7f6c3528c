"""The emulator's HTTP(S) listener: a WinRM look-alike in front of the SMS Provider core.

One port serves two things:

* `/wsman`: what pywinrm talks to. Authentication works like a WinRM listener's: Basic (over
  HTTPS, or over HTTP only with AllowUnencrypted) and Negotiate (NTLM, raw or in SPNEGO), whose
  security context lives on the TCP connection and seals every later message ([MS-WSMV]
  2.2.9.1.1). Each SOAP operation then passes the per-user quota, the fault plan (latency
  bounded by the request's OperationTimeout, injected failures) and reaches `Provider.handle`.
* `/admin/`: the JSON control API (emulator.admin), Basic-authenticated.

Replies carry `Server: Microsoft-HTTPAPI/2.0` like HTTP.sys; keep-alive connections idle for
`idle_timeout_s` are closed like HTTP.sys does; bodies are sized or chunked (a WS-Man POST with
neither is 411). Every request gets exactly one response. `Emulator(settings).start()` runs it in-process
(port 0 picks a free port); the CLI wraps the same object.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import Any

from emulator.admin import ADMIN_PREFIX, ADMIN_REALM_CHALLENGE, AdminApi, ProviderApi, ServerStats
from emulator.auth import (
    BASIC_CHALLENGE,
    NEGOTIATE_CHALLENGE,
    NTLM_USERS,
    SCHEME_BASIC,
    SCHEME_NEGOTIATE,
    SCHEME_NTLM,
    AuthFailedError,
    NtlmAcceptor,
    check_basic,
    parse_authorization,
    quiet_handshake_logging,
)
from emulator.encryption import (
    ENCRYPTED_CONTENT_TYPE,
    EncryptionFramingError,
    decode_encrypted_body,
    encode_encrypted_body,
    is_encrypted_content_type,
)
from emulator.faultplan import SOAP_FAULT_KINDS, FaultPlan
from emulator.provider import Provider
from emulator.settings import EmulatorSettings
from emulator.soap import SoapError, parse_request
from emulator.tls import TlsFiles, channel_binding_hash, generate_self_signed, server_context

__all__ = ["SERVER_HEADER", "WSMAN_PATH", "Emulator", "OperationGate", "OperationQuota"]

log = logging.getLogger(__name__)

WSMAN_PATH = "/wsman"
SERVER_HEADER = "Microsoft-HTTPAPI/2.0"
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
JSON_CONTENT_TYPE = "application/json"
HTML_CONTENT_TYPE = "text/html; charset=us-ascii"
# HTTP.sys's own error page (what a client sees when the request never reaches WinRM).
_HTTPSYS_ERROR_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    "<HTML><HEAD><TITLE>{title}</TITLE>\r\n"
    '<META HTTP-EQUIV="Content-Type" Content-Type="text/html; charset=us-ascii"></HEAD>\r\n'
    "<BODY><h2>{title}</h2>\r\n"
    "<hr><p>HTTP Error {status}. {text}</p>\r\n"
    "</BODY></HTML>\r\n"
)
_HTTPSYS_TEXTS = {
    404: ("Not Found", "The requested resource is not found."),
    405: ("Method Not Allowed", "The request method is not supported."),
    411: ("Length Required", "The request must be chunked or have a content length."),
    413: ("Request Entity Too Large", "The page was not displayed because the request entity is too large."),
    503: ("Service Unavailable", "The service is unavailable."),
}
_MAX_REQUEST_LINE_BYTES = 65_536
_ADMIN_MAX_BODY_BYTES = 64 * 1024
# Sealing adds a few dozen bytes of framing; leave room above the SOAP envelope limit.
_BODY_SLACK_BYTES = 64 * 1024
# One deadline for joining every thread in stop(): in-flight operations are woken by the stop
# event, so this only bounds a thread stuck in a socket call.
_STOP_JOIN_TIMEOUT_S = 5.0
_GATE_MAX_HOLD_S = 60.0
# Chunked request bodies ([RFC 9112] 7.1): size lines and trailers are bounded like request lines.
_MAX_CHUNK_LINE_BYTES = 1_024
_MAX_TRAILER_LINES = 64
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CRLF = b"\r\n"
# How often serve_forever checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL_S = 0.05


def _httpsys_page(status: int) -> bytes:
    title, text = _HTTPSYS_TEXTS[status]
    return _HTTPSYS_ERROR_PAGE.format(title=title, status=status, text=text).encode("ascii")


class OperationQuota:
    """In-flight WS-Man operations per user, capped like WinRM's MaxConcurrentOperationsPerUser."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._condition = threading.Condition()
        self._in_flight: dict[str, int] = {}

    @contextlib.contextmanager
    def enter(self, user: str) -> Iterator[bool]:
        """Count one operation for `user` while the block runs; yields False when over the cap."""
        key = user.casefold()
        with self._condition:
            admitted = self._in_flight.get(key, 0) < self._limit
            if admitted:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
                self._condition.notify_all()
        try:
            yield admitted
        finally:
            if admitted:
                with self._condition:
                    self._in_flight[key] -= 1
                    if not self._in_flight[key]:
                        del self._in_flight[key]
                    self._condition.notify_all()

    def in_flight(self, user: str) -> int:
        with self._condition:
            return self._in_flight.get(user.casefold(), 0)

    def wait_drained(self, user: str, timeout_s: float) -> bool:
        """Block until `user` has no operation in flight (False on timeout).

        A client can read its reply before the server thread leaves the operation, so "the
        reply arrived" does not yet mean "the count dropped": wait for the count itself.
        """
        with self._condition:
            return self._condition.wait_for(lambda: self._in_flight.get(user.casefold(), 0) == 0, timeout_s)

    def snapshot(self) -> dict[str, int]:
        with self._condition:
            return dict(self._in_flight)

    def wait_for(self, user: str, count: int, timeout_s: float) -> bool:
        """Block until `user` has at least `count` operations in flight (False on timeout)."""
        with self._condition:
            return self._condition.wait_for(lambda: self._in_flight.get(user.casefold(), 0) >= count, timeout_s)


class OperationGate:
    """Lets tests hold admitted operations in flight (deterministic concurrency, no sleeps)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        # Bounded: a test that forgets to release cannot wedge a handler thread forever
        # (Emulator.stop() releases the gate too).
        self._open.wait(_GATE_MAX_HOLD_S)


@dataclass
class _Connection:
    """Per-TCP-connection state: the NTLM security context, once a handshake started."""

    ntlm: NtlmAcceptor | None = None


class _App:
    """Everything a handler thread needs, shared by all connections of one emulator."""

    def __init__(
        self,
        *,
        settings: EmulatorSettings,
        provider: ProviderApi,
        faults: FaultPlan,
        stats: ServerStats,
        admin: AdminApi,
        tls_binding: bytes | None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.faults = faults
        self.stats = stats
        self.admin = admin
        self.tls_binding = tls_binding
        self.is_tls = tls_binding is not None
        self.quota = OperationQuota(settings.max_concurrent_operations_per_user)
        self.gate = OperationGate()
        # Set by Emulator.stop(): injected latency waits on it, so stopping never waits for a delay.
        self.stopping = threading.Event()
        self.max_body_bytes = settings.max_envelope_size_bytes + _BODY_SLACK_BYTES
        basic_usable = "basic" in settings.auth_modes and (self.is_tls or settings.allow_unencrypted)
        self.challenges = [NEGOTIATE_CHALLENGE] if "ntlm" in settings.auth_modes else []
        if basic_usable:
            self.challenges.append(BASIC_CHALLENGE)
        self.basic_usable = basic_usable


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


def _operation_timeout_s(envelope: bytes) -> float | None:
    """The request's w:OperationTimeout in seconds (None when absent or the envelope is unusable)."""
    try:
        return parse_request(envelope).operation_timeout_s
    except SoapError:
        return None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # Emulator.stop() closes connections and joins their threads itself
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: _App, ssl_context: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.ssl_context = ssl_context
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.connections_lock = threading.Lock()
        self.closing = False
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Client aborts, resets and TLS handshake failures are routine; anything else is a bug.
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended with an error", client_address, exc_info=True)
        else:
            log.exception("unexpected error serving %s", client_address)

    def close_all_connections(self) -> list[threading.Thread]:
        with self.connections_lock:
            self.closing = True  # a handler still in setup() closes its own connection
            live = list(self.connections.items())
        for sock, _thread in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return [thread for _sock, thread in live]


class _Handler(http.server.BaseHTTPRequestHandler):
    """One instance per TCP connection: its attributes are the connection's auth state."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_HEADER
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        app = self.server.app
        self.app = app
        self.conn = _Connection()
        self.idle_closed = False
        self.was_reset = False
        self.operation_ran = False
        self.final_auth_header: str | None = None
        # The idle timeout is the socket timeout (an SSLSocket inherits it from the plain one).
        self.request.settimeout(app.settings.idle_timeout_s)
        if self.server.ssl_context is not None:
            # Handshake here, in the connection's thread, so a slow client cannot block accept().
            self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        super().setup()
        with self.server.connections_lock:
            self.server.connections[self.connection] = threading.current_thread()
            if self.server.closing:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
        app.stats.incr("connections_opened")

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
            self.app.stats.incr("idle_closes")

    # -- request loop -------------------------------------------------------------------------

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
        method = getattr(self, "do_" + self.command, None)
        if method is None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")
            return
        try:
            method()
            if not self.was_reset:
                self.wfile.flush()
        finally:
            if self.operation_ran:
                self.app.stats.record_operation(time.thread_time() - cpu_start_s)

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.lower() == WSMAN_PATH:
            if self.command != "POST":
                if self._discard_body():
                    self._respond(405, _httpsys_page(405), HTML_CONTENT_TYPE, {"Allow": "POST"})
                return
            self._wsman()
        elif path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/"):
            self._admin()
        elif self._discard_body():
            self._respond(404, _httpsys_page(404), HTML_CONTENT_TYPE)

    # -- I/O helpers ----------------------------------------------------------------------------

    def _respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        www_authenticate: list[str] | None = None,
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
        self.app.stats.incr(f"http_{status}")
        self.wfile.write(head + body if self.command != "HEAD" else head)
        self.log_request(status, len(body))

    def _read_body(self, limit: int, *, length_required: bool = False) -> bytes | None:
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
            self._respond(status, _httpsys_page(status), HTML_CONTENT_TYPE)
        else:
            self._respond(status)

    def _discard_body(self) -> bool:
        """Read and drop the body; False when it could not be read (the error is already answered)."""
        # Keep the connection usable: an unread body would be parsed as the next request.
        return self._read_body(self.app.max_body_bytes) is not None

    def _reset_connection(self) -> None:
        """Abort the TCP connection with RST (SO_LINGER 0), as a dropped connection looks."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.was_reset = True
        self.close_connection = True
        self.app.stats.incr("connection_resets")

    # -- /wsman ---------------------------------------------------------------------------------

    def _unauthorized(self, counter: str) -> None:
        self.app.stats.incr(counter)
        self._respond(401, www_authenticate=self.app.challenges)

    def _authenticate(self, encrypted: bool) -> str | None:
        """The authenticated user, or None after answering (401 challenge / failure, 400)."""
        authorization = parse_authorization(self.headers.get("Authorization"))
        if authorization is None:
            return self._connection_user(encrypted)
        if authorization.scheme == SCHEME_BASIC:
            return self._basic_user(authorization.token)
        if authorization.scheme in (SCHEME_NEGOTIATE, SCHEME_NTLM) and "ntlm" in self.app.settings.auth_modes:
            return self._ntlm_step(authorization.scheme, authorization.token)
        self._unauthorized("auth_failures")
        return None

    def _connection_user(self, encrypted: bool) -> str | None:
        """No Authorization header: the connection's NTLM user, else 400 (sealed body) or 401."""
        if self.conn.ntlm is not None and self.conn.ntlm.complete:
            return self.conn.ntlm.user
        if encrypted:
            # A sealed body on a connection with no security context (e.g. a new connection
            # after an idle close): WinRM answers 400 and pywinrm raises WinRMTransportError.
            self.app.stats.incr("encrypted_without_context")
            self._respond(400)
        else:
            self._unauthorized("auth_challenges")
        return None

    def _basic_user(self, token: str) -> str | None:
        app = self.app
        if not app.basic_usable:
            # WinRM refuses Basic over HTTP unless AllowUnencrypted (pywinrm: InvalidCredentialsError).
            self._unauthorized("auth_basic_refused")
            return None
        try:
            return check_basic(
                token,
                username=app.settings.username,
                password=app.settings.password,
                extra_usernames=app.settings.denied_users,
            )
        except AuthFailedError:
            self._unauthorized("auth_failures")
            return None

    def _ntlm_step(self, scheme: str, token: str) -> str | None:
        if self.conn.ntlm is None:
            self.conn.ntlm = NtlmAcceptor(channel_binding_hash=self.app.tls_binding)
        acceptor = self.conn.ntlm
        try:
            reply_token = acceptor.step_b64(token)
        except AuthFailedError:
            self.conn.ntlm = None
            self._unauthorized("auth_failures")
            return None
        # Answer in the scheme the client used (requests_ntlm looks for "<scheme> <token>").
        scheme_name = "Negotiate" if scheme == SCHEME_NEGOTIATE else "NTLM"
        if not acceptor.complete:
            if reply_token is None:
                self.conn.ntlm = None
                self._unauthorized("auth_failures")
                return None
            self.app.stats.incr("ntlm_challenges")
            self._respond(401, www_authenticate=[f"{scheme_name} {reply_token}"])
            return None
        if reply_token is not None:
            self.final_auth_header = f"{scheme_name} {reply_token}"
        self.app.stats.incr("ntlm_authenticated")
        return acceptor.user

    def _wsman(self) -> None:
        app = self.app
        body = self._read_body(app.max_body_bytes, length_required=True)
        if body is None:
            return
        encrypted = is_encrypted_content_type(self.headers.get("Content-Type"))
        user = self._authenticate(encrypted)
        if user is None:
            return
        acceptor = self.conn.ntlm if encrypted else None
        if encrypted:
            if acceptor is None or not acceptor.complete:
                app.stats.incr("encrypted_without_context")
                self._respond(400)
                return
            try:
                envelope = decode_encrypted_body(body, acceptor.unwrap)
            except (EncryptionFramingError, AuthFailedError):
                app.stats.incr("encrypted_undecryptable")
                self._respond(400)
                return
        else:
            envelope = body
            if not envelope.strip():
                # pywinrm's empty priming POST: it only authenticates the connection.
                app.stats.incr("empty_posts")
                self._respond(200)
                return
            if not app.is_tls and not app.settings.allow_unencrypted:
                # WinRM with AllowUnencrypted=false refuses plaintext SOAP over HTTP.
                self._unauthorized("plaintext_refused")
                return
        app.stats.incr("wsman_encrypted" if encrypted else "wsman_plaintext")
        self._operation(envelope, user, acceptor)

    def _operation(self, envelope: bytes, user: str, acceptor: NtlmAcceptor | None) -> None:
        if len(envelope) > self.app.settings.max_envelope_size_bytes:
            # The limit is on the SOAP envelope, after decryption (sealing adds framing bytes).
            self.app.stats.incr("envelope_too_large")
            self._respond(413, _httpsys_page(413), HTML_CONTENT_TYPE)
            return
        app = self.app
        self.operation_ran = True
        with app.quota.enter(user) as admitted:
            if not admitted:
                app.stats.incr("quota_rejections")
                self._send_reply(app.provider.fault_reply("quota_fault", envelope), acceptor)
                return
            # Decide only once admitted: a quota rejection must not consume a queued fault.
            decision = app.faults.decide()
            app.stats.incr("operations_admitted")
            app.gate.pass_through()
            if decision.delay_s > 0 and self._delay_timed_out(decision.delay_s, envelope, acceptor):
                return
            if app.stopping.is_set():
                self.close_connection = True  # stop() is closing the socket: nothing to answer
                return
            kind = decision.kind
            if kind == "connection_reset":
                self._reset_connection()
                return
            if kind == "http_503":
                app.stats.incr("injected_http_503")
                self._respond(503, _httpsys_page(503), HTML_CONTENT_TYPE)
                return
            if kind in SOAP_FAULT_KINDS:
                app.stats.incr(f"injected_{kind}")
                reply = app.provider.fault_reply(kind, envelope)
            else:
                reply = app.provider.handle(envelope, user=user)
            self._send_reply(reply, acceptor)

    def _delay_timed_out(self, delay_s: float, envelope: bytes, acceptor: NtlmAcceptor | None) -> bool:
        """Wait out injected latency; past the request's OperationTimeout answer w:TimedOut (True)."""
        app = self.app
        timeout_s = _operation_timeout_s(envelope)
        if timeout_s is None or delay_s <= timeout_s:
            app.stopping.wait(delay_s)
            return False
        # WinRM gives up on a provider slower than the request's OperationTimeout and answers
        # the w:TimedOut fault ([MS-WSMV] 3.1.4.1.2) once that much time has passed.
        if app.stopping.wait(timeout_s):
            self.close_connection = True
        else:
            app.stats.incr("operation_timeouts")
            self._send_reply(app.provider.fault_reply("timeout_fault", envelope), acceptor)
        return True

    def _send_reply(self, reply: Any, acceptor: NtlmAcceptor | None) -> None:
        if acceptor is not None:
            body = encode_encrypted_body(reply.body, acceptor.wrap)
            self._respond(reply.status, body, ENCRYPTED_CONTENT_TYPE)
        else:
            self._respond(reply.status, reply.body, SOAP_CONTENT_TYPE)

    # -- /admin ---------------------------------------------------------------------------------

    def _admin(self) -> None:
        app = self.app
        body = self._read_body(_ADMIN_MAX_BODY_BYTES)
        if body is None:
            return
        authorization = parse_authorization(self.headers.get("Authorization"))
        try:
            if authorization is None or authorization.scheme != SCHEME_BASIC:
                raise AuthFailedError("admin requires Basic credentials")
            check_basic(authorization.token, username=app.settings.username, password=app.settings.password)
        except AuthFailedError:
            app.stats.incr("admin_auth_failures")
            self._respond(
                401,
                b'{"error": "admin API requires the emulator credentials (HTTP Basic)"}',
                JSON_CONTENT_TYPE,
                www_authenticate=[ADMIN_REALM_CHALLENGE],
            )
            return
        answer = app.admin.handle(self.command, self.path, body)
        self._respond(answer.status, answer.body(), JSON_CONTENT_TYPE, dict(answer.headers))

    def version_string(self) -> str:
        return SERVER_HEADER

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines and statuses only: headers (and so credentials) are never logged.
        log.debug("%s %s", self.address_string(), format % args)


class Emulator:
    """An SMS Provider emulator listening on HTTP(S): `Emulator(settings).start()`, then `.url`."""

    def __init__(self, settings: EmulatorSettings, *, provider: ProviderApi | None = None) -> None:
        if not settings.password:
            raise ValueError("EmulatorSettings.password must be set (the CLI generates one when empty)")
        if not settings.auth_modes:
            raise ValueError("EmulatorSettings.auth_modes must name at least one of basic, ntlm")
        if not settings.idle_timeout_s > 0:
            raise ValueError("EmulatorSettings.idle_timeout_s must be > 0")
        if settings.max_concurrent_operations_per_user < 1:
            raise ValueError("EmulatorSettings.max_concurrent_operations_per_user must be >= 1")
        self.settings = settings
        self.provider: ProviderApi = provider if provider is not None else Provider(settings)
        self.faults = FaultPlan.from_settings(settings)
        self.stats = ServerStats()
        self.ca_cert_path: str | None = None
        self._tls_dir: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ntlm_registered: list[str] = []
        self._started_at = 0.0
        self._app: _App | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind, start serving in a background thread and return self."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        settings = self.settings
        quiet_handshake_logging()
        try:
            ssl_context, binding = self._tls_setup()
            if "ntlm" in settings.auth_modes:
                # Denied users authenticate with the same password; the provider refuses them WMI access.
                for user in (settings.username, *settings.denied_users):
                    NTLM_USERS.register(user, settings.password)
                    self._ntlm_registered.append(user)
            app = _App(
                settings=settings,
                provider=self.provider,
                faults=self.faults,
                stats=self.stats,
                admin=AdminApi(provider=self.provider, faults=self.faults, stats=self.stats, describe=self.describe),
                tls_binding=binding,
            )
            self._server = _Server((settings.host, settings.port), app, ssl_context)
        except BaseException:
            self._cleanup()
            raise
        self._app = app
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name=f"emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, wake and close every connection, join the threads, remove generated files."""
        server, self._server = self._server, None
        if self._app is not None:
            # Wake operations waiting out injected latency or a held gate: they answer nothing.
            self._app.stopping.set()
            self._app.gate.release()
        threads: list[threading.Thread] = []
        if server is not None:
            server.shutdown()
            server.server_close()
            threads = server.close_all_connections()
        if self._thread is not None:
            threads.append(self._thread)
            self._thread = None
        deadline_s = time.monotonic() + _STOP_JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(max(0.0, deadline_s - time.monotonic()))
        self._cleanup()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _tls_setup(self) -> tuple[ssl.SSLContext | None, bytes | None]:
        settings = self.settings
        if settings.tls == "off":
            return None, None
        if settings.tls == "files":
            if not settings.tls_cert_file or not settings.tls_key_file:
                raise ValueError("tls='files' needs tls_cert_file and tls_key_file")
            files = TlsFiles(cert_file=settings.tls_cert_file, key_file=settings.tls_key_file)
        else:
            self._tls_dir = tempfile.mkdtemp(prefix="sccm-emulator-tls-")
            files = generate_self_signed(self._tls_dir, self._certificate_names())
            self.ca_cert_path = files.ca_cert_file
        return server_context(files), channel_binding_hash(files.cert_file)

    def _certificate_names(self) -> list[str]:
        host = self.settings.host
        names = [] if host in ("0.0.0.0", "::", "") else [host]  # noqa: S104 - compared, not bound
        return [*names, "localhost", "127.0.0.1", "::1", self.settings.machine, socket.gethostname()]

    def _cleanup(self) -> None:
        while self._ntlm_registered:
            NTLM_USERS.unregister(self._ntlm_registered.pop())
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    # -- addresses and observation --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
            host = "localhost"
        if ":" in host:
            host = f"[{host}]"
        scheme = "http" if self.settings.tls == "off" else "https"
        return f"{scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The WS-Man endpoint (what pywinrm's Protocol takes)."""
        return self.base_url + WSMAN_PATH

    @property
    def admin_url(self) -> str:
        return self.base_url + ADMIN_PREFIX

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (served by GET /admin/health)."""
        settings = self.settings
        return {
            "endpoint": self.url if self.running else None,
            "site_code": settings.site_code,
            "machine": settings.machine,
            "auth_modes": list(settings.auth_modes),
            "tls": settings.tls,
            "allow_unencrypted": settings.allow_unencrypted,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self.running else 0.0,
            "in_flight": self._app.quota.snapshot() if self._app is not None else {},
        }

    def in_flight(self, user: str) -> int:
        """WS-Man operations of `user` currently being answered."""
        return self._running_app().quota.in_flight(user)

    def wait_in_flight(self, user: str, count: int, timeout_s: float = 5.0) -> bool:
        """Block until `user` has `count` operations in flight (False on timeout)."""
        return self._running_app().quota.wait_for(user, count, timeout_s)

    def wait_drained(self, user: str, timeout_s: float = 5.0) -> bool:
        """Block until `user` has no operation in flight (False on timeout)."""
        return self._running_app().quota.wait_drained(user, timeout_s)

    @contextlib.contextmanager
    def hold_operations(self) -> Iterator[None]:
        """While the block runs, admitted operations wait in flight (quota tests without sleeps)."""
        gate = self._running_app().gate
        gate.hold()
        try:
            yield
        finally:
            gate.release()

    def _running_app(self) -> _App:
        if self._app is None:
            raise RuntimeError("emulator not started")
        return self._app
