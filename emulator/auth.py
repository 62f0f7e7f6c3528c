"""WinRM-style authentication for the emulator: Basic and NTLM (pyspnego's acceptor).

WinRM authenticates the TCP connection, not the request: an NTLM handshake (three legs, the
last one carrying the first real request or pywinrm's empty priming POST) leaves a security
context on the connection, and later requests arrive sealed with it and without an
Authorization header. `NtlmAcceptor` is that per-connection context; the server keeps one on
each connection's handler.

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
import os
import shutil
import struct
import tempfile
import threading
from dataclasses import dataclass, field

import spnego
import spnego.channel_bindings
import spnego.exceptions

__all__ = [
    "BASIC_CHALLENGE",
    "NEGOTIATE_CHALLENGE",
    "NTLM_USERS",
    "NTLM_USER_FILE_ENV",
    "AuthFailedError",
    "AuthorizationHeader",
    "NtlmAcceptor",
    "NtlmUserStore",
    "check_basic",
    "parse_authorization",
]

NTLM_USER_FILE_ENV = "NTLM_USER_FILE"
SCHEME_BASIC = "basic"
SCHEME_NEGOTIATE = "negotiate"
SCHEME_NTLM = "ntlm"
# What a WinRM listener advertises on 401 (Negotiate always; Basic only when enabled).
NEGOTIATE_CHALLENGE = "Negotiate"
BASIC_CHALLENGE = 'Basic realm="WSMAN"'
_NTLMSSP_SIGNATURE = b"NTLMSSP\x00"
_NTLM_NEGOTIATE_MESSAGE = 1
_NTLM_AUTHENTICATE_MESSAGE = 3
_TLS_SERVER_END_POINT = b"tls-server-end-point:"
_FORBIDDEN_IN_USER_FILE = (":", "\n", "\r")


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


def _decode_b64(token: str) -> bytes:
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthFailedError("authorization token is not valid base64") from exc


def check_basic(token: str, *, username: str, password: str) -> str:
    """Return the user name when the Basic `token` holds these credentials, else raise AuthFailedError."""
    try:
        decoded = _decode_b64(token).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthFailedError("basic credentials are not UTF-8") from exc
    given_user, separator, given_password = decoded.partition(":")
    # Windows account names are case-insensitive; passwords are compared in constant time.
    user_ok = given_user.casefold() == username.casefold()
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (separator and user_ok and password_ok):
        raise AuthFailedError("basic credentials rejected")
    return username


def _ntlm_message_type(token: bytes) -> int | None:
    if len(token) < 12 or not token.startswith(_NTLMSSP_SIGNATURE):
        return None
    (message_type,) = struct.unpack_from("<I", token, len(_NTLMSSP_SIGNATURE))
    return int(message_type)


class NtlmAcceptor:
    """The NTLM security context of one connection: handshake, then seal/unseal messages."""

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
        """Feed one client token; return the challenge to send back (None once authenticated)."""
        message_type = _ntlm_message_type(token)
        if message_type == _NTLM_NEGOTIATE_MESSAGE:
            # A new handshake replaces whatever context the connection had.
            self.user = None
            self._context = spnego.server(
                protocol="ntlm",
                options=spnego.NegotiateOptions.use_ntlm,
                channel_bindings=self._bindings,
            )
        elif message_type != _NTLM_AUTHENTICATE_MESSAGE or self._context is None:
            self._context = None
            raise AuthFailedError("unexpected NTLM message (only raw NTLMSSP tokens are accepted)")
        try:
            reply = self._context.step(token)
        except (spnego.exceptions.SpnegoError, ValueError, struct.error) as exc:
            self._context = None
            raise AuthFailedError("NTLM authentication failed") from exc
        if message_type == _NTLM_AUTHENTICATE_MESSAGE:
            if not self._context.complete or not self._context.client_principal:
                self._context = None
                raise AuthFailedError("NTLM authentication did not complete")
            self.user = self._context.client_principal
        return reply

    def step_b64(self, token: str) -> str | None:
        """`step` on a base64 token from an Authorization header; base64 reply or None."""
        reply = self.step(_decode_b64(token))
        return base64.b64encode(reply).decode() if reply else None

    def wrap(self, message: bytes) -> bytes:
        """Seal `message`: `signature + sealed` bytes ([MS-NLMP] 3.4.3)."""
        return self._established().wrap(message, encrypt=True).data

    def unwrap(self, data: bytes) -> bytes:
        """Verify and unseal `signature + sealed` bytes; AuthFailedError when they do not check out."""
        try:
            return self._established().unwrap(data).data
        except (spnego.exceptions.SpnegoError, ValueError, struct.error) as exc:
            raise AuthFailedError("sealed message failed verification") from exc

    def _established(self) -> spnego.ContextProxy:
        if self._context is None or self.user is None:
            raise AuthFailedError("no NTLM security context on this connection")
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
