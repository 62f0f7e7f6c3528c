"""The emulator's HTTP framing on raw sockets: one response per request, 411 without a length, chunked bodies."""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator

import pytest
import requests
from winrm.exceptions import WinRMTransportError

from emulator.server import Emulator
from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME, EmulatorFactory, winrm_protocol
from testing.wsman_requests import get_envelope, relates_to

pytestmark = pytest.mark.integration

_READ_TIMEOUT_S = 5.0
_MAX_READS = 1_000
_STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ", re.MULTILINE)
_BASIC = base64.b64encode(f"{EMULATOR_USERNAME}:{EMULATOR_PASSWORD}".encode()).decode()
_MESSAGE_ID = "uuid:0F8A1B2C-7777-2222-3333-444455556666"


def _exchange(emulator: Emulator, request: bytes) -> list[int]:
    """Send raw bytes, read until the server closes, return every status code it sent."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=_READ_TIMEOUT_S) as sock:
        sock.sendall(request)
        for _ in range(_MAX_READS):
            chunk = sock.recv(65_536)
            if not chunk:
                break
            received += chunk
    return [int(code) for code in _STATUS_LINE.findall(bytes(received))]


def _request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: emulator", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


def test_an_unreadable_body_gets_exactly_one_response(emulator_basic_http: Emulator) -> None:
    """A body refused while being discarded (413) is the only answer: no 404 follows it."""
    request = _request("GET", "/nowhere", "Content-Length: 999999999")
    assert _exchange(emulator_basic_http, request) == [413]


def test_a_bad_chunk_on_a_405_path_gets_exactly_one_response(emulator_basic_http: Emulator) -> None:
    """GET /wsman with a malformed chunked body is one 400, not 400 then 405."""
    request = _request("GET", "/wsman", "Transfer-Encoding: chunked", body=b"zz\r\n\r\n")
    assert _exchange(emulator_basic_http, request) == [400]


def test_a_wsman_post_without_a_length_is_411(emulator_basic_http: Emulator) -> None:
    """Neither Content-Length nor chunked coding on a POST is HTTP.sys's 411, not an empty request."""
    request = _request("POST", "/wsman", f"Authorization: Basic {_BASIC}", "Connection: close")
    assert _exchange(emulator_basic_http, request) == [411]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (("Transfer-Encoding: gzip, chunked",), 501),
        (("Transfer-Encoding: chunked", "Content-Length: 5"), 400),
    ],
    ids=["unknown-coding", "both-framings"],
)
def test_unusable_transfer_encodings_are_refused(
    emulator_basic_http: Emulator, headers: tuple[str, ...], status: int
) -> None:
    """Only plain chunked coding is read; ambiguous framing is refused."""
    request = _request("POST", "/wsman", f"Authorization: Basic {_BASIC}", *headers, body=b"0\r\n\r\n")
    assert _exchange(emulator_basic_http, request) == [status]


def _chunks(payload: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def test_a_chunked_soap_request_is_answered(emulator_basic_http: Emulator) -> None:
    """A chunked POST (requests sends one for a generator body) reaches the provider like a sized one."""
    package = emulator_basic_http.provider.packages()[0]
    envelope = get_envelope(
        emulator_basic_http.url, "PS1", package["PackageID"], class_name=package["class"], message_id=_MESSAGE_ID
    ).encode()
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(
            emulator_basic_http.url,
            data=_chunks(envelope, 100),
            auth=(EMULATOR_USERNAME, EMULATOR_PASSWORD),
            headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
            timeout=_READ_TIMEOUT_S,
        )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200
    assert relates_to(response.content) == _MESSAGE_ID


def test_a_chunk_announced_past_the_size_limit_is_413(emulator_basic_http: Emulator) -> None:
    """Chunked bodies count against the same limit as sized ones, checked before the data is read."""
    request = _request(
        "POST", "/wsman", f"Authorization: Basic {_BASIC}", "Transfer-Encoding: chunked", body=b"ffffffff\r\n"
    )
    assert _exchange(emulator_basic_http, request) == [413]


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_an_envelope_over_max_envelope_size_is_413_after_decryption(
    emulator_factory: EmulatorFactory, auth: str
) -> None:
    """--max-envelope-size-bytes bounds the SOAP envelope itself, sealed (NTLM) or not."""
    emulator = emulator_factory(max_envelope_size_bytes=4096, auth_modes=(auth,), allow_unencrypted=auth == "basic")
    protocol = winrm_protocol(emulator, transport="basic" if auth == "basic" else "ntlm")
    padding = "<!--" + "x" * 5000 + "-->"
    envelope = get_envelope(emulator.url, emulator.settings.site_code, "PS100001").replace(
        "</s:Body>", padding + "</s:Body>"
    )
    with pytest.raises(WinRMTransportError) as info:
        protocol.send_message(envelope)
    assert info.value.code == 413
    assert emulator.stats.count("envelope_too_large") == 1
