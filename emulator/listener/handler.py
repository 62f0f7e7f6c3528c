"""The listener's request handler: `/wsman` like a WinRM listener, `/admin/` for control.

Per request on `/wsman`: read the body (http_framing), authenticate (connection_auth), unseal an
encrypted body, then run the operation: count it for the concurrency high-water mark, pass the
per-user quota (quota), draw the fault plan (emulator.fault_injection) and plan the answer
(operation_plan), wait, and answer with the provider's reply or the planned failure. `/admin/`
takes HTTP Basic with the emulator's credentials and hands the request to emulator.admin.
Anything else is HTTP.sys's 404. Every request gets exactly one response.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Final

from emulator.admin import ADMIN_PREFIX, ADMIN_REALM_CHALLENGE, AdminApi, ProviderApi, ReplyLike
from emulator.concurrency import ConcurrencyMeter
from emulator.fault_injection import FaultPlan
from emulator.listener.auth import SCHEME_BASIC, AuthFailedError, NegotiateContext, check_basic, parse_authorization
from emulator.listener.connection_auth import ConnectionAuth, ListenerAuth
from emulator.listener.encryption import (
    ENCRYPTED_CONTENT_TYPE,
    EncryptionFramingError,
    decode_encrypted_body,
    encode_encrypted_body,
    is_encrypted_content_type,
)
from emulator.listener.http_framing import HTML_CONTENT_TYPE, HttpSysHandler, HttpSysServer, httpsys_page
from emulator.listener.operation_plan import OperationPlan, plan_admitted, plan_over_quota
from emulator.listener.quota import OperationGate, OperationQuota
from emulator.settings import EmulatorSettings
from emulator.stats import ServerStats

__all__ = ["WSMAN_PATH", "Listener", "ListenerServer", "WsmanHandler"]

WSMAN_PATH: Final = "/wsman"
SOAP_CONTENT_TYPE: Final = "application/soap+xml;charset=UTF-8"
JSON_CONTENT_TYPE: Final = "application/json"
_ADMIN_MAX_BODY_BYTES: Final = 64 * 1024
# Sealing adds a few dozen bytes of framing; leave room above the SOAP envelope limit.
_BODY_SLACK_BYTES: Final = 64 * 1024
# A lost Invoke holds its connection until the older refresh is done (DistMgr is modelled lazily:
# nothing to await but the clock), at most this long.
_LOST_INVOKE_POLL_S: Final = 0.05
_LOST_INVOKE_MAX_HOLD_S: Final = 120.0


class Listener:
    """Everything a handler thread needs, shared by all connections of one emulator."""

    def __init__(
        self,
        *,
        settings: EmulatorSettings,
        provider: ProviderApi,
        faults: FaultPlan,
        stats: ServerStats,
        concurrency: ConcurrencyMeter,
        admin: AdminApi,
        tls_binding: bytes | None,
        operation_timeout_s: Callable[[bytes], float | None],
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.faults = faults
        self.stats = stats
        self.concurrency = concurrency
        self.admin = admin
        # The request's w:OperationTimeout: reading it is the WS-Man layer's job, handed in by the server.
        self.operation_timeout_s = operation_timeout_s
        self.auth = ListenerAuth(settings, tls_binding=tls_binding)
        # WinRM with AllowUnencrypted=false refuses plaintext SOAP over plain HTTP.
        self.plaintext_allowed = tls_binding is not None or settings.allow_unencrypted
        self.quota = OperationQuota(settings.max_concurrent_operations_per_user)
        self.gate = OperationGate()
        # Set by Emulator.stop(): injected latency waits on it, so stopping never waits for a delay.
        self.stopping = threading.Event()
        self.max_body_bytes = settings.max_envelope_size_bytes + _BODY_SLACK_BYTES


class ListenerServer(HttpSysServer):
    """The HTTP.sys-like server carrying one emulator's shared listener state."""

    def __init__(self, address: tuple[str, int], listener: Listener, ssl_context: ssl.SSLContext | None) -> None:
        self.listener = listener
        super().__init__(
            address,
            WsmanHandler,
            ssl_context=ssl_context,
            idle_timeout_s=listener.settings.idle_timeout_s,
            stats=listener.stats,
        )


class WsmanHandler(HttpSysHandler):
    """One instance per TCP connection: its `conn` is the connection's authentication state."""

    server: ListenerServer

    def setup(self) -> None:
        self.listener = self.server.listener
        self.conn = ConnectionAuth()
        super().setup()

    def handle_request(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.lower() == WSMAN_PATH:
            if self.command != "POST":
                if self.discard_body(self.listener.max_body_bytes):
                    self.respond(405, httpsys_page(405), HTML_CONTENT_TYPE, {"Allow": "POST"})
                return
            self._wsman()
        elif path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/"):
            self._admin()
        elif self.discard_body(self.listener.max_body_bytes):
            self.respond(404, httpsys_page(404), HTML_CONTENT_TYPE)

    # -- /wsman ---------------------------------------------------------------------------------

    def _wsman(self) -> None:
        listener = self.listener
        body = self.read_body(listener.max_body_bytes, length_required=True)
        if body is None:
            return
        encrypted = is_encrypted_content_type(self.headers.get("Content-Type"))
        result = listener.auth.authenticate(self.conn, self.headers.get("Authorization"), encrypted=encrypted)
        if result.counter is not None:
            self.stats.incr(result.counter)
        if result.user is None:
            self.respond(result.status, www_authenticate=result.www_authenticate)
            return
        self.final_auth_header = result.final_header
        acceptor = self.conn.established if encrypted else None
        if encrypted:
            if acceptor is None:
                self.stats.incr("encrypted_without_context")
                self.respond(400)
                return
            try:
                envelope = decode_encrypted_body(body, acceptor.unwrap)
            except (EncryptionFramingError, AuthFailedError):
                self.stats.incr("encrypted_undecryptable")
                self.respond(400)
                return
        else:
            envelope = body
            if not envelope.strip():
                # pywinrm's empty priming POST: it only authenticates the connection.
                self.stats.incr("empty_posts")
                self.respond(200)
                return
            if not listener.plaintext_allowed:
                self.stats.incr("plaintext_refused")
                self.respond(401, www_authenticate=listener.auth.challenges)
                return
        self.stats.incr("wsman_encrypted" if encrypted else "wsman_plaintext")
        self._operation(envelope, result.user, acceptor)

    def _operation(self, envelope: bytes, user: str, acceptor: NegotiateContext | None) -> None:
        listener = self.listener
        if len(envelope) > listener.settings.max_envelope_size_bytes:
            # The limit is on the SOAP envelope, after decryption (sealing adds framing bytes).
            self.stats.incr("envelope_too_large")
            self.respond(413, httpsys_page(413), HTML_CONTENT_TYPE)
            return
        self.operation_ran = True
        # The meter is left first, so "the quota count drained" implies "the meter's count did".
        with listener.quota.enter(user) as admitted, listener.concurrency.track(user):
            if not admitted:
                reply = self._execute(plan_over_quota(), envelope, user, acceptor)
            else:
                # Draw only once admitted: a quota rejection must not consume a queued fault.
                decision = listener.faults.decide()
                self.stats.incr("operations_admitted")
                listener.gate.pass_through()
                reply = self._execute(
                    plan_admitted(decision, lambda: listener.operation_timeout_s(envelope)), envelope, user, acceptor
                )
        # Written once the operation has left the quota and the meter: a client holding its
        # reply can rely on the server no longer counting it, so a client-side cap of N is never
        # seen as N + 1 (nor the next request refused over quota) because a thread was still
        # between its write and the end of the count.
        if reply is not None:
            reply()

    def _execute(
        self, plan: OperationPlan, envelope: bytes, user: str, acceptor: NegotiateContext | None
    ) -> Callable[[], None] | None:
        """Carry out `plan`; the reply to write, if there is one (a reset or a stop has none)."""
        listener = self.listener
        if plan.wait_s > 0:
            listener.stopping.wait(plan.wait_s)
        if listener.stopping.is_set():
            self.close_connection = True  # stop() is closing the socket: nothing to answer
            return None
        if plan.counter is not None:
            self.stats.incr(plan.counter)
        if plan.answer == "connection_reset":
            self.reset_connection()
            return None
        if plan.answer == "http_503":
            return lambda: self.respond(503, httpsys_page(503), HTML_CONTENT_TYPE)
        if plan.answer == "soap_fault":
            return self._reply(listener.provider.fault_reply(plan.fault_kind, envelope), acceptor)
        if plan.answer == "lost_reply":
            listener.provider.handle(envelope, user=user)
            self.reset_connection()
            return None
        return self._provider_answer(envelope, user, acceptor)

    def _provider_answer(
        self, envelope: bytes, user: str, acceptor: NegotiateContext | None
    ) -> Callable[[], None] | None:
        """The provider's reply to write; None when the fault plan aims to lose this Invoke."""
        lost = self._invoke_to_lose(envelope)
        if lost is not None:
            self._lose_invoke(lost)
            return None
        return self._reply(self.listener.provider.handle(envelope, user=user), acceptor)

    def _invoke_to_lose(self, envelope: bytes) -> str | None:
        """The PackageID when this is an Invoke the fault plan aims to lose (its package pending now)."""
        listener = self.listener
        if not listener.faults.loses_invokes():
            return None
        package_id = listener.provider.refresh_target(envelope)
        if package_id is None or not listener.provider.refresh_pending(package_id):
            return None
        return package_id if listener.faults.take_lost_invoke(package_id) else None

    def _lose_invoke(self, package_id: str) -> None:
        """Never run, never answered: the connection drops once the older refresh is done, so the
        client looks again at a package whose SourceVersion rose for someone else's refresh."""
        listener = self.listener
        self.stats.incr("lost_invokes_while_pending")
        deadline = time.monotonic() + _LOST_INVOKE_MAX_HOLD_S
        while listener.provider.refresh_pending(package_id) and time.monotonic() < deadline:
            if listener.stopping.wait(_LOST_INVOKE_POLL_S):
                break
        self.stats.incr("lost_invokes_dropped")
        self.reset_connection()

    def _reply(self, reply: ReplyLike, acceptor: NegotiateContext | None) -> Callable[[], None]:
        """The reply sealed now (NTLM sequence numbers follow the operations' order), written later."""
        if acceptor is not None:
            body = encode_encrypted_body(reply.body, acceptor.wrap)
            return lambda: self.respond(reply.status, body, ENCRYPTED_CONTENT_TYPE)
        return lambda: self.respond(reply.status, reply.body, SOAP_CONTENT_TYPE)

    # -- /admin ---------------------------------------------------------------------------------

    def _admin(self) -> None:
        listener = self.listener
        body = self.read_body(_ADMIN_MAX_BODY_BYTES)
        if body is None:
            return
        authorization = parse_authorization(self.headers.get("Authorization"))
        settings = listener.settings
        try:
            if authorization is None or authorization.scheme != SCHEME_BASIC:
                raise AuthFailedError("admin requires Basic credentials")
            check_basic(authorization.token, username=settings.username, password=settings.password)
        except AuthFailedError:
            self.stats.incr("admin_auth_failures")
            self.respond(
                401,
                b'{"error": "admin API requires the emulator credentials (HTTP Basic)"}',
                JSON_CONTENT_TYPE,
                www_authenticate=[ADMIN_REALM_CHALLENGE],
            )
            return
        answer = listener.admin.handle(self.command, self.path, body)
        self.respond(answer.status, answer.body(), JSON_CONTENT_TYPE, dict(answer.headers))
