"""WinRM-style authentication for the emulator: Basic and Negotiate/NTLM (pyspnego's acceptor).

WinRM authenticates the TCP connection, not the request: a Negotiate handshake (the last leg
carrying the first real request or pywinrm's empty priming POST) leaves a security context on
the connection, and later requests arrive sealed with it and without an Authorization header.
`NtlmAcceptor` is that per-connection context; the server keeps one on each connection's
handler. Like Windows it accepts both token forms clients send under the `Negotiate` scheme:
raw NTLMSSP (pywinrm, requests-ntlm) and NTLM wrapped in SPNEGO ([MS-SPNG]; pypsrp, curl
--negotiate, Windows' own client), whose last leg answers with a final SPNEGO token.

pyspnego's NTLM acceptor validates users against the flat file named by the environment
variable NTLM_USER_FILE (`DOMAIN:USER:PASSWORD` lines). `NTLM_USERS` owns that file for the
process: private (0600 in a 0700 directory), one line per registered emulator user, removed
at exit. Registering one user with two passwords at once is refused, since the file could
not tell which emulator a login is meant for.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import hmac
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import spnego
import spnego.channel_bindings

__all__ = [
    "BASIC_CHALLENGE",
    "NEGOTIATE_CHALLENGE",
    "NTLM_USERS",
    "NTLM_USER_FILE_ENV",
    "AuthFailedError",
    "AuthorizationHeader",
    "NegotiateContext",
    "NtlmAcceptor",
    "NtlmUserStore",
    "check_basic",
    "decode_b64",
    "is_initial_token",
    "parse_authorization",
    "quiet_handshake_logging",
]

NTLM_USER_FILE_ENV = "NTLM_USER_FILE"
SCHEME_BASIC = "basic"
SCHEME_NEGOTIATE = "negotiate"
SCHEME_NTLM = "ntlm"
# What a WinRM listener advertises on 401 (Negotiate always; Basic only when enabled).
NEGOTIATE_CHALLENGE = "Negotiate"
BASIC_CHALLENGE = 'Basic realm="WSMAN"'
_NTLMSSP_NEGOTIATE_PREFIX = b"NTLMSSP\x00\x01\x00\x00\x00"  # [MS-NLMP] 2.2.1.1: signature, MessageType 1
# [RFC 2743] 3.1: an InitialContextToken (SPNEGO's NegTokenInit) starts with the [APPLICATION 0] tag.
_GSS_INITIAL_CONTEXT_TOKEN_TAG = 0x60
_TLS_SERVER_END_POINT = b"tls-server-end-point:"
_NTLM_SIGNATURE_LENGTH = 16  # [MS-NLMP] 2.2.2.9: NTLMSSP_MESSAGE_SIGNATURE
_FORBIDDEN_IN_USER_FILE = (":", "\n", "\r")
# pyspnego logs every handshake token at DEBUG ("NTLM step input/output: <base64>"): a CHALLENGE
# next to its AUTHENTICATE is a NetNTLMv2 hash anyone reading the log can crack offline.
_HANDSHAKE_LOGGER = "spnego"
_HANDSHAKE_LOG_MIN_LEVEL = logging.INFO


def quiet_handshake_logging() -> None:
    """Raise pyspnego's logger to at least INFO (never lower it), even under --log-level DEBUG."""
    logger = logging.getLogger(_HANDSHAKE_LOGGER)
    if logger.level < _HANDSHAKE_LOG_MIN_LEVEL:  # NOTSET (inherit the root's DEBUG) included
        logger.setLevel(_HANDSHAKE_LOG_MIN_LEVEL)


class AuthFailedError(Exception):
    """Authentication failed (bad token, unknown user, wrong password). Never holds secrets."""


@dataclass(frozen=True)
class AuthorizationHeader:
    """An `Authorization` header split into its scheme (lower case) and token."""

    scheme: str
    token: str = field(repr=False)


def parse_authorization(value: str | None) -> AuthorizationHeader | None:
    """Split `Authorization: <scheme> <token>`; None when absent or malformed."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if not scheme or not token.strip():
        return None
    return AuthorizationHeader(scheme=scheme.lower(), token=token.strip())


class NegotiateContext(Protocol):
    """A connection's Negotiate security context (NTLM here, Kerberos in emulator.listener.kerberos)."""

    user: str | None

    @property
    def complete(self) -> bool: ...

    def step_b64(self, token: str) -> str | None: ...

    def wrap(self, message: bytes) -> tuple[bytes, bytes]: ...

    def unwrap(self, signature: bytes, sealed: bytes) -> bytes: ...


def decode_b64(token: str) -> bytes:
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthFailedError("authorization token is not valid base64") from exc


def check_basic(token: str, *, username: str, password: str, extra_usernames: Sequence[str] = ()) -> str:
    """The account (as configured) when the Basic `token` holds `username` or one of `extra_usernames`
    with `password`, else raise AuthFailedError."""
    try:
        decoded = decode_b64(token).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthFailedError("basic credentials are not UTF-8") from exc
    given_user, separator, given_password = decoded.partition(":")
    # Windows account names are case-insensitive; passwords are compared in constant time.
    matched = next((name for name in (username, *extra_usernames) if given_user.casefold() == name.casefold()), None)
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (separator and matched is not None and password_ok):
        raise AuthFailedError("basic credentials rejected")
    return matched


def is_initial_token(token: bytes) -> bool:
    """True for the first token of a handshake: raw NTLM NEGOTIATE or a SPNEGO NegTokenInit."""
    return token.startswith(_NTLMSSP_NEGOTIATE_PREFIX) or token[:1] == bytes((_GSS_INITIAL_CONTEXT_TOKEN_TAG,))


class NtlmAcceptor:
    """The Negotiate (NTLM, raw or in SPNEGO) context of one connection: handshake, then seal/unseal."""

    def __init__(self, *, channel_binding_hash: bytes | None = None) -> None:
        self._bindings = (
            spnego.channel_bindings.GssChannelBindings(application_data=_TLS_SERVER_END_POINT + channel_binding_hash)
            if channel_binding_hash
            else None
        )
        self._context: spnego.ContextProxy | None = None
        self.user: str | None = None

    @property
    def complete(self) -> bool:
        return self.user is not None

    def step(self, token: bytes) -> bytes | None:
        """Feed one client token; return the token to send back (None when there is none).

        `complete` tells whether the client is authenticated: SPNEGO's last leg both completes
        the context and returns a final token (accept-completed, with the mechListMIC).
        """
        if is_initial_token(token):
            # A new handshake replaces whatever context the connection had.
            self.user = None
            # use_negotiate: pyspnego's own SPNEGO acceptor (never GSSAPI, which has no NTLM
            # user file); it takes raw NTLMSSP tokens as well as SPNEGO-wrapped ones.
            self._context = spnego.server(
                protocol="negotiate",
                options=spnego.NegotiateOptions.use_negotiate,
                channel_bindings=self._bindings,
            )
        elif self._context is None or self.user is not None:
            self._context, self.user = None, None
            raise AuthFailedError("unexpected authentication token: no handshake in progress")
        try:
            reply = self._context.step(token)
        except Exception as exc:
            # The token is attacker-controlled and pyspnego's parsers raise many types on garbage
            # (KeyError, IndexError, OverflowError, ... besides SpnegoError): all mean "refused".
            self._context = None
            raise AuthFailedError("Negotiate authentication failed") from exc
        if self._context.complete:
            if not self._context.client_principal:
                self._context = None
                raise AuthFailedError("Negotiate authentication did not identify a user")
            self.user = self._context.client_principal
        return reply

    def step_b64(self, token: str) -> str | None:
        """`step` on a base64 token from an Authorization header; base64 reply or None (see `step`)."""
        reply = self.step(decode_b64(token))
        return base64.b64encode(reply).decode() if reply else None

    def wrap(self, message: bytes) -> tuple[bytes, bytes]:
        """Seal `message`: (signature, sealed) ([MS-NLMP] 3.4.3: a 16-byte signature first)."""
        wrapped = self._established().wrap(message, encrypt=True).data
        return wrapped[:_NTLM_SIGNATURE_LENGTH], wrapped[_NTLM_SIGNATURE_LENGTH:]

    def unwrap(self, signature: bytes, sealed: bytes) -> bytes:
        """Verify and unseal one part; AuthFailedError when it does not check out."""
        try:
            return self._established().unwrap(signature + sealed).data
        except Exception as exc:  # garbage from the network: any parse failure is a failed verification
            raise AuthFailedError("sealed message failed verification") from exc

    def _established(self) -> spnego.ContextProxy:
        if self._context is None or self.user is None:
            raise AuthFailedError("no Negotiate security context on this connection")
        return self._context


def _split_user(username: str) -> tuple[str, str]:
    """`DOMAIN\\user` -> (DOMAIN, user); a UPN or bare name has no domain part (as pyspnego splits)."""
    domain, separator, user = username.partition("\\")
    return (domain, user) if separator else ("", username)


class NtlmUserStore:
    """The process-wide NTLM_USER_FILE: reference-counted registrations, rewritten atomically."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        self._directory: str | None = None

    @property
    def path(self) -> str | None:
        """The user file's path, once something was registered."""
        return os.path.join(self._directory, "users") if self._directory else None

    def register(self, username: str, password: str) -> None:
        """Make `username`/`password` acceptable to NTLM acceptors in this process."""
        domain, user = _split_user(username)
        for value in (domain, user, password):
            if any(char in value for char in _FORBIDDEN_IN_USER_FILE):
                raise ValueError("NTLM user names and passwords cannot contain ':' or line breaks")
        key = (domain.upper(), user.upper())
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None and not hmac.compare_digest(existing[2].encode(), password.encode()):
                raise ValueError(f"NTLM user {username!r} is already registered in this process with another password")
            count = existing[3] + 1 if existing else 1
            self._entries[key] = (domain, user, password, count)
            self._write()

    def unregister(self, username: str) -> None:
        """Drop one registration of `username` (the line goes when the last one does)."""
        domain, user = _split_user(username)
        key = (domain.upper(), user.upper())
        with self._lock:
            existing = self._entries.get(key)
            if existing is None:
                return
            if existing[3] > 1:
                self._entries[key] = (*existing[:3], existing[3] - 1)
            else:
                del self._entries[key]
            self._write()

    def cleanup(self) -> None:
        """Remove the file and its directory (registered with atexit)."""
        with self._lock:
            if self._directory:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
                self._entries.clear()

    def _write(self) -> None:
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="sccm-emulator-ntlm-")
            atexit.register(self.cleanup)
        path = os.path.join(self._directory, "users")
        content = "".join(f"{d}:{u}:{p}\n" for d, u, p, _ in self._entries.values())
        fd, temp_path = tempfile.mkstemp(dir=self._directory)  # created 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        # Atomic replace: an acceptor reading the file mid-update sees the old or the new lines.
        os.replace(temp_path, path)
        os.environ[NTLM_USER_FILE_ENV] = path


NTLM_USERS = NtlmUserStore()
