"""Who is calling `/wsman`: a WinRM listener's authentication, one decision per request (no sockets).

Basic works over HTTPS, or over HTTP only with AllowUnencrypted. Negotiate (NTLM, raw or in
SPNEGO; Kerberos, raw or in SPNEGO, when the listener has a keytab) runs a handshake whose
security context lives on the TCP connection (`ConnectionAuth`) and then authenticates, and
seals, every later request on it ([MS-WSMV] 2.2.9.1.1). `ListenerAuth.authenticate` returns
either the user or the answer to send instead (a 401 challenge, a 401 failure, or 400 for a
sealed body on a connection with no context), plus the statistics counter it bumps.
Credentials are never logged or kept beyond the check.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.listener.auth import (
    BASIC_CHALLENGE,
    NEGOTIATE_CHALLENGE,
    SCHEME_BASIC,
    SCHEME_NEGOTIATE,
    SCHEME_NTLM,
    AuthFailedError,
    NegotiateContext,
    NtlmAcceptor,
    check_basic,
    decode_b64,
    is_initial_token,
    parse_authorization,
)
from emulator.listener.kerberos import KerberosAcceptor, KerberosKeytab, is_kerberos_token
from emulator.settings import EmulatorSettings

__all__ = ["AuthResult", "ConnectionAuth", "ListenerAuth"]


@dataclass
class ConnectionAuth:
    """Per-TCP-connection state: the Negotiate security context, once a handshake started."""

    negotiate: NegotiateContext | None = None

    @property
    def established(self) -> NegotiateContext | None:
        """The completed context (it seals and unseals messages), or None."""
        return self.negotiate if self.negotiate is not None and self.negotiate.complete else None


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The authenticated `user`, or (user None) the `status` and challenges to answer with."""

    user: str | None
    counter: str | None = None
    status: int = 200
    # None: no WWW-Authenticate header of our own (the 400 answer).
    www_authenticate: tuple[str, ...] | None = None
    # SPNEGO's last leg: the accept-completed token rides on the answer to the authenticated request.
    final_header: str | None = None


class ListenerAuth:
    """The authentication a listener with these settings performs."""

    def __init__(self, settings: EmulatorSettings, *, tls_binding: bytes | None) -> None:
        self._settings = settings
        self._tls_binding = tls_binding
        self._ntlm_enabled = "ntlm" in settings.auth_modes
        self._keytab: KerberosKeytab | None = None
        if "kerberos" in settings.auth_modes:
            if not settings.kerberos_keytab:
                raise ValueError("auth mode 'kerberos' needs kerberos_keytab (the listener's HTTP/<host> keys)")
            self._keytab = KerberosKeytab(settings.kerberos_keytab)
        self.basic_usable = "basic" in settings.auth_modes and (tls_binding is not None or settings.allow_unencrypted)
        self._negotiate_enabled = self._ntlm_enabled or self._keytab is not None
        challenges = [NEGOTIATE_CHALLENGE] if self._negotiate_enabled else []
        if self.basic_usable:
            challenges.append(BASIC_CHALLENGE)
        self.challenges = tuple(challenges)

    def authenticate(self, connection: ConnectionAuth, authorization: str | None, *, encrypted: bool) -> AuthResult:
        """Authenticate one request from its Authorization header and the connection's context."""
        header = parse_authorization(authorization)
        if header is None:
            return self._connection_user(connection, encrypted)
        if header.scheme == SCHEME_BASIC:
            return self._basic(header.token)
        if header.scheme in (SCHEME_NEGOTIATE, SCHEME_NTLM) and self._negotiate_enabled:
            return self._negotiate_step(connection, header.scheme, header.token)
        return self._unauthorized("auth_failures")

    def close(self) -> None:
        if self._keytab is not None:
            self._keytab.close()

    def _unauthorized(self, counter: str) -> AuthResult:
        return AuthResult(None, counter, 401, self.challenges)

    def _connection_user(self, connection: ConnectionAuth, encrypted: bool) -> AuthResult:
        """No Authorization header: the connection's Negotiate user, else 400 (sealed body) or 401."""
        established = connection.established
        if established is not None:
            return AuthResult(established.user)
        if encrypted:
            # A sealed body on a connection with no security context (e.g. a new connection
            # after an idle close): WinRM answers 400 and pywinrm raises WinRMTransportError.
            return AuthResult(None, "encrypted_without_context", 400)
        return self._unauthorized("auth_challenges")

    def _basic(self, token: str) -> AuthResult:
        if not self.basic_usable:
            # WinRM refuses Basic over HTTP unless AllowUnencrypted (pywinrm: InvalidCredentialsError).
            return self._unauthorized("auth_basic_refused")
        settings = self._settings
        try:
            user = check_basic(
                token, username=settings.username, password=settings.password, extra_usernames=settings.denied_users
            )
        except AuthFailedError:
            return self._unauthorized("auth_failures")
        return AuthResult(user)

    def _new_context(self, scheme: str, raw: bytes) -> NegotiateContext | None:
        """A fresh context for a handshake's first token, by the mechanism it names (None: not offered)."""
        if scheme == SCHEME_NEGOTIATE and is_kerberos_token(raw):
            if self._keytab is None:
                return None
            return KerberosAcceptor(self._keytab, channel_binding_hash=self._tls_binding)
        if not self._ntlm_enabled:
            return None
        return NtlmAcceptor(channel_binding_hash=self._tls_binding)

    def _negotiate_step(self, connection: ConnectionAuth, scheme: str, token: str) -> AuthResult:
        try:
            raw = decode_b64(token)
        except AuthFailedError:
            connection.negotiate = None
            return self._unauthorized("auth_failures")
        if is_initial_token(raw):
            # A new handshake replaces whatever context the connection had.
            connection.negotiate = self._new_context(scheme, raw)
        acceptor = connection.negotiate
        if acceptor is None or acceptor.complete:
            # A continuation with no handshake in progress, or a mechanism this listener does not offer.
            connection.negotiate = None
            return self._unauthorized("auth_failures")
        kerberos = isinstance(acceptor, KerberosAcceptor)
        try:
            reply_token = acceptor.step_b64(token)
        except AuthFailedError:
            connection.negotiate = None
            return self._unauthorized("auth_kerberos_failures" if kerberos else "auth_failures")
        # Answer in the scheme the client used (requests_ntlm looks for "<scheme> <token>").
        scheme_name = "Negotiate" if scheme == SCHEME_NEGOTIATE else "NTLM"
        if not acceptor.complete:
            if reply_token is None:
                connection.negotiate = None
                return self._unauthorized("auth_failures")
            return AuthResult(None, "ntlm_challenges", 401, (f"{scheme_name} {reply_token}",))
        final_header = f"{scheme_name} {reply_token}" if reply_token is not None else None
        return AuthResult(
            acceptor.user, "kerberos_authenticated" if kerberos else "ntlm_authenticated", final_header=final_header
        )
