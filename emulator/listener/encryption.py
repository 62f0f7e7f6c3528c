"""[MS-WSMV] 2.2.9.1.1 SPNEGO message encryption framing (pure functions): NTLM and Kerberos.

After Negotiate authentication over plain HTTP, WinRM clients send each SOAP message sealed with
the connection's session key (NTLM's, or Kerberos' through GSS wrap), wrapped in a MIME-like `multipart/encrypted` body:

    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/HTTP-SPNEGO-session-encrypted\\r\\n
    \\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext length>\\r\\n
    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/octet-stream\\r\\n
    <signature length: int32 LE><signature (NTLM: 16 bytes; Kerberos: the wrap token header)><sealed message>
    --Encrypted Boundary--\\r\\n

The layout matches pywinrm's `winrm/encryption.py` byte for byte (its parser splits on the
boundary lines and strips exactly these header lines), and the reply uses the same shape.
The cryptography itself is injected (`wrap` / `unwrap` callables over the connection's context), so
this module only frames and checks.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "ENCRYPTED_CONTENT_TYPE",
    "SPNEGO_ENCRYPTED_PROTOCOL",
    "EncryptionFramingError",
    "SealedPart",
    "decode_encrypted_body",
    "encode_encrypted_body",
    "is_encrypted_content_type",
    "parse_encrypted_body",
]

SPNEGO_ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
_BOUNDARY = b"--Encrypted Boundary"
_PART_SEPARATOR = _BOUNDARY + b"\r\n"
_END_MARKER = _BOUNDARY + b"--\r\n"
_OCTET_STREAM_HEADER = b"\tContent-Type: application/octet-stream\r\n"
_LENGTH_RE = re.compile(rb"Length=(\d+)")
_SIGNATURE_LENGTH = struct.Struct("<i")
# NTLM signatures are 16 bytes, Kerberos AES headers 60; refuse absurd values.
_MAX_SIGNATURE_LENGTH = 1024


class EncryptionFramingError(ValueError):
    """The body is not a well-formed MS-WSMV encrypted message (or its length does not match)."""


@dataclass(frozen=True)
class SealedPart:
    """One encrypted part: the announced plaintext length and `signature + sealed` bytes."""

    original_length: int
    signature: bytes
    sealed: bytes


def is_encrypted_content_type(content_type: str | None) -> bool:
    """True for a `multipart/encrypted` (or CredSSP's `multipart/x-multi-encrypted`) body."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("multipart/encrypted", "multipart/x-multi-encrypted")


def encode_encrypted_body(message: bytes, wrap: Callable[[bytes], tuple[bytes, bytes]]) -> bytes:
    """Frame `message` sealed by `wrap`, which returns (signature, sealed): NTLM's 16-byte
    signature, or Kerberos' wrap token header (longer, its length set by the enctype)."""
    signature, sealed = wrap(message)
    return b"".join(
        (
            _PART_SEPARATOR,
            b"\tContent-Type: ",
            SPNEGO_ENCRYPTED_PROTOCOL.encode(),
            b"\r\n",
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=",
            str(len(message)).encode(),
            b"\r\n",
            _PART_SEPARATOR,
            _OCTET_STREAM_HEADER,
            _SIGNATURE_LENGTH.pack(len(signature)),
            signature,
            sealed,
            _END_MARKER,
        )
    )


def parse_encrypted_body(body: bytes) -> list[SealedPart]:
    """Split an encrypted body into its sealed parts, or raise EncryptionFramingError."""
    if not body.startswith(_PART_SEPARATOR):
        raise EncryptionFramingError("encrypted body does not start with the MIME boundary")
    if body.endswith(_END_MARKER):
        body = body[: -len(_END_MARKER)]
    chunks = [chunk for chunk in body.split(_PART_SEPARATOR) if chunk]
    if not chunks or len(chunks) % 2:
        raise EncryptionFramingError("encrypted body must hold header/payload pairs")
    parts: list[SealedPart] = []
    for header, payload in zip(chunks[0::2], chunks[1::2], strict=True):
        match = _LENGTH_RE.search(header)
        if match is None or not payload.startswith(_OCTET_STREAM_HEADER):
            raise EncryptionFramingError("encrypted part lacks its OriginalContent length or payload header")
        data = payload[len(_OCTET_STREAM_HEADER) :]
        if len(data) < _SIGNATURE_LENGTH.size:
            raise EncryptionFramingError("encrypted payload is too short")
        (signature_length,) = _SIGNATURE_LENGTH.unpack_from(data)
        signature_end = _SIGNATURE_LENGTH.size + signature_length
        if not 0 < signature_length <= _MAX_SIGNATURE_LENGTH or len(data) < signature_end:
            raise EncryptionFramingError("encrypted payload has an invalid signature length")
        parts.append(
            SealedPart(
                original_length=int(match.group(1)),
                signature=data[_SIGNATURE_LENGTH.size : signature_end],
                sealed=data[signature_end:],
            )
        )
    return parts


def decode_encrypted_body(body: bytes, unwrap: Callable[[bytes, bytes], bytes]) -> bytes:
    """Unseal every part with `unwrap(signature, sealed)` and check the announced lengths."""
    message = bytearray()
    for part in parse_encrypted_body(body):
        plaintext = unwrap(part.signature, part.sealed)
        if len(plaintext) != part.original_length:
            raise EncryptionFramingError("decrypted length does not match OriginalContent Length")
        message += plaintext
    return bytes(message)
