"""Search text and bytes for the test secrets in every encoding a leak would take.

The two test passwords (the emulator's and a wrong one), raw and UTF-16LE, as base64 and
URL-safe base64 at every byte alignment, the Basic `Authorization` value, and NTLM AUTHENTICATE
messages (not the password, but they crack to it offline). A blob is searched as is, then every
string inside it as JSON, then whatever base64 among those decodes to.

    assert leak_report({"worker log": text}) == {}
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME
from testing.fixtures_pipeline import WRONG_PASSWORD

__all__ = [
    "NEEDLES",
    "NTLM_AUTHENTICATE_SIGNATURE",
    "SECRETS",
    "base64_at_every_alignment",
    "basic_authorization",
    "leak_report",
    "leaks_in",
]

SECRETS: Final = {"EMULATOR_PASSWORD": EMULATOR_PASSWORD, "WRONG_PASSWORD": WRONG_PASSWORD}
# [MS-NLMP] 2.2.1.3: an AUTHENTICATE_MESSAGE starts with "NTLMSSP\0" and MessageType 3.
NTLM_AUTHENTICATE_SIGNATURE: Final = b"NTLMSSP\x00\x03\x00\x00\x00"
_BASE64_TEXT: Final = re.compile(rb"^[A-Za-z0-9+/_-]{8,}={0,2}$")
_EXPAND_DEPTH: Final = 4


def base64_at_every_alignment(data: bytes) -> list[bytes]:
    """The base64 (standard and URL-safe) of `data` as it appears inside any longer encoded blob.

    A secret embedded at byte offset 0, 1 or 2 (mod 3) of a larger value encodes to three
    different strings; the characters fully determined by the secret are searched for.
    """
    variants: list[bytes] = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data)
        start = -(-offset * 8 // 6)  # first character holding no padding bits
        end = (offset + len(data)) * 8 // 6  # last character holding only the secret's bits
        core = encoded[start:end]
        variants += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return variants


def basic_authorization(username: str, password: str) -> bytes:
    """The value of an HTTP Basic `Authorization` header (RFC 7617)."""
    return base64.b64encode(f"{username}:{password}".encode())


def secret_needles() -> dict[bytes, str]:
    """Every byte string whose presence means a leak, labelled with what it encodes."""
    needles: dict[bytes, str] = {}
    for name, secret in SECRETS.items():
        for encoding in ("utf-8", "utf-16-le"):
            raw = secret.encode(encoding)
            needles[raw] = f"{name} ({encoding})"
            for variant in base64_at_every_alignment(raw):
                needles[variant] = f"{name} ({encoding}, base64)"
        needles[basic_authorization(EMULATOR_USERNAME, secret)] = f"{name} (Basic Authorization value)"
    # Not the password, but as good as one: with the CHALLENGE it answers, an NTLM AUTHENTICATE
    # message is a NetNTLMv2 hash that a reader of the log can crack offline.
    needles[NTLM_AUTHENTICATE_SIGNATURE] = "NTLM AUTHENTICATE message"
    for variant in base64_at_every_alignment(NTLM_AUTHENTICATE_SIGNATURE):
        needles[variant] = "NTLM AUTHENTICATE message (base64)"
    return needles


NEEDLES: Final = secret_needles()


def expand(blob: bytes, depth: int = _EXPAND_DEPTH) -> Iterator[bytes]:
    """`blob`, then every string inside it as JSON, then whatever base64 among those decodes to."""
    yield blob
    if depth == 0:
        return
    if _BASE64_TEXT.match(blob.strip()):
        decoded = _b64decode(blob.strip())
        if decoded is not None:
            yield from expand(decoded, depth - 1)
    try:
        parsed = json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        return
    for text in json_strings(parsed):
        if text.encode() != blob:
            yield from expand(text.encode(), depth - 1)


def json_strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)


def _b64decode(text: bytes) -> bytes | None:
    padded = text + b"=" * (-len(text) % 4)
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def leaks_in(blob: bytes | str) -> set[str]:
    """Labels of the secrets found in `blob` or anything it decodes to."""
    data = blob.encode() if isinstance(blob, str) else blob
    return {label for piece in expand(data) for needle, label in NEEDLES.items() if needle in piece}


def leak_report(blobs: Mapping[str, bytes | str]) -> dict[str, set[str]]:
    """{where: labels} for every blob that holds a secret (empty when nothing leaks)."""
    return {where: found for where, blob in blobs.items() if (found := leaks_in(blob))}
