"""Unit tests of emulator.encryption: MS-WSMV 2.2.9.1.1 framing, checked against pywinrm's own code."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import requests
from winrm.encryption import Encryption

from emulator.listener.encryption import (
    ENCRYPTED_CONTENT_TYPE,
    EncryptionFramingError,
    decode_encrypted_body,
    encode_encrypted_body,
    is_encrypted_content_type,
    parse_encrypted_body,
)

_SIGNATURE = b"S" * 16


def _fake_wrap(message: bytes) -> tuple[bytes, bytes]:
    return _SIGNATURE, bytes(b ^ 0x5A for b in message)


def _fake_unwrap(signature: bytes, sealed: bytes) -> bytes:
    assert signature == _SIGNATURE
    return bytes(b ^ 0x5A for b in sealed)


class _ShimSecurity:
    """requests_ntlm's session_security shape, with the fake cipher."""

    def wrap(self, message: bytes) -> tuple[bytes, bytes]:
        signature, sealed = _fake_wrap(message)
        return sealed, signature

    def unwrap(self, message: bytes, signature: bytes) -> bytes:
        return _fake_unwrap(signature, message)


def _pywinrm_encryption() -> Encryption:
    session = requests.Session()
    session.auth = cast(Any, SimpleNamespace(session_security=_ShimSecurity()))
    return Encryption(session, "ntlm")


def test_pywinrm_request_body_decodes() -> None:
    """A body framed by pywinrm's Encryption class decodes to the original SOAP."""
    soap = b"<s:Envelope>caf\xc3\xa9 --Encrypted Boundary look-alike</s:Envelope>"
    request = _pywinrm_encryption().prepare_encrypted_request(requests.Session(), "http://host:5985/wsman", soap)
    assert request.headers["Content-Type"] == ENCRYPTED_CONTENT_TYPE
    assert decode_encrypted_body(cast(bytes, request.body), _fake_unwrap) == soap


def test_reply_body_parses_with_pywinrm() -> None:
    """Our framed reply is what pywinrm's parse_encrypted_response decrypts back."""
    soap = b"<s:Envelope><s:Body>reply</s:Body></s:Envelope>"
    response = requests.Response()
    response.headers["Content-Type"] = ENCRYPTED_CONTENT_TYPE
    response._content = encode_encrypted_body(soap, _fake_wrap)
    response.request = requests.Request("POST", "http://host:5985/wsman").prepare()
    assert _pywinrm_encryption().parse_encrypted_response(response) == soap


def test_length_mismatch_is_rejected() -> None:
    """A plaintext whose length differs from OriginalContent Length raises."""
    body = encode_encrypted_body(b"12345", _fake_wrap).replace(b"Length=5", b"Length=6")
    with pytest.raises(EncryptionFramingError, match="length"):
        decode_encrypted_body(body, _fake_unwrap)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<s:Envelope/>",
        b"--Encrypted Boundary\r\nheader-only",
        b"--Encrypted Boundary\r\nLength=3\r\n"
        b"--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n\xff\xff",
    ],
)
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    """Bodies that are not header/payload pairs with a sane signature raise EncryptionFramingError."""
    with pytest.raises(EncryptionFramingError):
        parse_encrypted_body(body)


def test_content_type_detection() -> None:
    """multipart/encrypted (any parameters, any case) is encrypted; SOAP and absent are not."""
    assert is_encrypted_content_type(ENCRYPTED_CONTENT_TYPE)
    assert is_encrypted_content_type('Multipart/Encrypted; protocol="x"')
    assert not is_encrypted_content_type("application/soap+xml;charset=UTF-8")
    assert not is_encrypted_content_type(None)
