"""The emulator as a Kerberos acceptor: Negotiate with Kerberos, from a keytab (python-gssapi).

A WinRM listener on a domain member accepts, under the `Negotiate` scheme, either a raw Kerberos
token (what pywinrm's requests-kerberos sends: an [RFC 4121] InitialContextToken with the
Kerberos OID) or SPNEGO whose preferred mechanism is Kerberos (Windows' own client, pypsrp). MIT's
GSS-API mechanism glue picks the mechanism from the token itself, so one acceptor context over
credentials from the keytab takes both. The keytab holds the listener's SPN keys (`HTTP/<host>`):
a ticket for any other SPN cannot be decrypted and is refused, as Windows refuses it. Tickets past
their end time, authenticators outside the clock skew and replayed authenticators (kept in a
replay cache private to the emulator) are refused by libkrb5 itself.

Message encryption ([MS-WSMV] 2.2.9.1.1, the same framing as NTLM's) uses GSS wrap with IOV
buffers: the "signature" is the Kerberos wrap token header (its length varies with the enctype),
the sealed part the encrypted SOAP. python-gssapi is imported only here and only when a listener
accepts Kerberos, so an install without the `kerberos` extra runs Basic and NTLM as before.
"""

from __future__ import annotations

import atexit
import base64
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

from emulator.listener.auth import AuthFailedError, decode_b64

__all__ = [
    "KERBEROS_MECH_OIDS",
    "KerberosAcceptor",
    "KerberosKeytab",
    "is_kerberos_token",
    "kerberos_available",
]

# [RFC 4121] 1.1 / [MS-KILE] 3.1.5.2: Kerberos v5, and the OID Windows once sent by mistake and still
# accepts. DER-encoded (tag 0x06, length 9).
KERBEROS_MECH_OIDS: Final = (
    bytes.fromhex("06092a864886f712010202"),
    bytes.fromhex("06092a864882f712010202"),
)
_SPNEGO_OID: Final = bytes.fromhex("06062b0601050502")  # [RFC 4178] 1.3.6.1.5.5.2
_GSS_INITIAL_CONTEXT_TOKEN_TAG: Final = 0x60
_TLS_SERVER_END_POINT: Final = b"tls-server-end-point:"


def kerberos_available() -> str | None:
    """None when python-gssapi imports, else why not (for a clear start-up error)."""
    try:
        import gssapi  # noqa: F401, PLC0415 - optional: only a Kerberos listener needs it
    except ImportError as exc:
        return f"Kerberos needs the `kerberos` extra (python-gssapi, MIT libkrb5): {exc}"
    return None


def _der_length(token: bytes, offset: int) -> tuple[int, int]:
    """([X.690] 8.1.3) the length at `offset` and where the content starts; ValueError on garbage."""
    first = token[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if not 0 < count <= 4 or offset + 1 + count > len(token):
        raise ValueError("bad DER length")
    return int.from_bytes(token[offset + 1 : offset + 1 + count], "big"), offset + 1 + count


def _first_spnego_mech(token: bytes) -> bytes | None:
    """The first mechType (DER OID) of a SPNEGO NegTokenInit ([RFC 4178] 4.2.1), None if not one."""
    try:
        _, at = _der_length(token, 1)  # after [APPLICATION 0]
        if token[at : at + len(_SPNEGO_OID)] != _SPNEGO_OID:
            return None
        at += len(_SPNEGO_OID)
        # negTokenInit [0] -> NegTokenInit SEQUENCE -> mechTypes [0] -> MechTypeList SEQUENCE -> OID
        for tag in (0xA0, 0x30, 0xA0, 0x30):
            if token[at] != tag:
                return None
            _, at = _der_length(token, at + 1)
        if token[at] != 0x06:
            return None
        length, content = _der_length(token, at + 1)
        return token[at : content + length]
    except (IndexError, ValueError):
        return None


def is_kerberos_token(token: bytes) -> bool:
    """True for the first token of a Kerberos handshake: raw Kerberos, or SPNEGO preferring Kerberos."""
    if token[:1] != bytes((_GSS_INITIAL_CONTEXT_TOKEN_TAG,)):
        return False
    try:
        _, at = _der_length(token, 1)
    except (IndexError, ValueError):
        return False
    if any(token[at : at + len(oid)] == oid for oid in KERBEROS_MECH_OIDS):
        return True
    return _first_spnego_mech(token) in KERBEROS_MECH_OIDS


class KerberosKeytab:
    """The acceptor credentials of one listener: its keytab, and a replay cache of its own."""

    def __init__(self, keytab: str) -> None:
        problem = kerberos_available()
        if problem is not None:
            raise ValueError(problem)
        import gssapi  # noqa: PLC0415 - optional dependency, see kerberos_available

        path = Path(keytab)
        if not path.is_file():
            raise ValueError(f"Kerberos keytab {keytab!r} is not a readable file")
        self.keytab = str(path)
        # libkrb5's default replay cache is a file in /var/tmp shared by every acceptor of the user:
        # the emulator keeps its own, removed at exit.
        self._rcache_dir = tempfile.mkdtemp(prefix="sccm-emulator-rcache-")
        atexit.register(shutil.rmtree, self._rcache_dir, ignore_errors=True)
        store: dict[bytes | str, bytes | str] = {
            "keytab": f"FILE:{self.keytab}",
            "rcache": f"file2:{Path(self._rcache_dir) / 'rcache'}",
        }
        try:
            self.credentials: Any = gssapi.Credentials(usage="accept", store=store)
        except gssapi.raw.GSSError as exc:
            raise ValueError(f"Kerberos keytab {keytab!r} gives no acceptor credentials: {exc.gen_message()}") from None

    def close(self) -> None:
        shutil.rmtree(self._rcache_dir, ignore_errors=True)


class KerberosAcceptor:
    """The Kerberos context of one connection: handshake, then WinRM wrap/unwrap (IOV)."""

    def __init__(self, keytab: KerberosKeytab, *, channel_binding_hash: bytes | None = None) -> None:
        import gssapi  # noqa: PLC0415 - optional dependency, see kerberos_available

        self._gssapi = gssapi
        self._keytab = keytab
        # Over HTTPS a client that sends channel bindings must have bound them to our certificate.
        self._bindings = (
            gssapi.raw.ChannelBindings(application_data=_TLS_SERVER_END_POINT + channel_binding_hash)
            if channel_binding_hash
            else None
        )
        self._context: Any = None
        self.user: str | None = None

    @property
    def complete(self) -> bool:
        return self.user is not None

    def step(self, token: bytes) -> bytes | None:
        """Accept the client's AP-REQ (raw or in SPNEGO); the AP-REP to send back (mutual auth)."""
        gssapi = self._gssapi
        self.user = None
        self._context = gssapi.SecurityContext(
            creds=self._keytab.credentials, usage="accept", channel_bindings=self._bindings
        )
        try:
            reply: bytes | None = self._context.step(token)
            # python-gssapi may hold a failure back until the context is next looked at.
            complete = bool(self._context.complete)
            user = str(self._context.initiator_name).rstrip("\x00") if complete else None
        except Exception as exc:
            # Another SPN's ticket, an expired ticket, skew, a replay, or garbage: all "refused".
            # The reason stays out of the answer (Windows sends none either); the cause is chained.
            self._context = None
            raise AuthFailedError("Kerberos authentication failed") from exc
        if not complete or not user:
            # Kerberos completes in one leg; a mechanism wanting more is one we did not offer.
            self._context = None
            raise AuthFailedError("Kerberos handshake did not complete in one leg")
        self.user = user
        return reply

    def step_b64(self, token: str) -> str | None:
        """`step` on a base64 token from an Authorization header; base64 reply or None."""
        reply = self.step(decode_b64(token))
        return base64.b64encode(reply).decode() if reply else None

    def wrap(self, message: bytes) -> tuple[bytes, bytes]:
        """Seal `message` for WinRM: (wrap token header, encrypted message + padding)."""
        from gssapi.raw import ext_dce  # noqa: PLC0415 - optional dependency

        context = self._established()
        buffers = ext_dce.IOV(ext_dce.IOVBufferType.header, message, ext_dce.IOVBufferType.padding, std_layout=False)
        ext_dce.wrap_iov(context, buffers, confidential=True)
        header, sealed, padding = (buffers[i].value or b"" for i in range(3))
        return header, sealed + padding

    def unwrap(self, signature: bytes, sealed: bytes) -> bytes:
        """Verify and decrypt one part; AuthFailedError when it does not check out."""
        from gssapi.raw import ext_dce  # noqa: PLC0415 - optional dependency

        context = self._established()
        buffers = ext_dce.IOV(
            (ext_dce.IOVBufferType.header, False, signature),
            (ext_dce.IOVBufferType.data, False, sealed),
            (ext_dce.IOVBufferType.data, False, None),
            std_layout=False,
        )
        try:
            ext_dce.unwrap_iov(context, buffers)
        except Exception as exc:  # garbage from the network: any failure is a failed verification
            raise AuthFailedError("sealed message failed verification") from exc
        plaintext: bytes = buffers[1].value or b""
        return plaintext

    def _established(self) -> Any:
        if self._context is None or self.user is None:
            raise AuthFailedError("no Kerberos security context on this connection")
        return self._context
