"""Unit tests of the one reply parser (worker.wsman.soap_parser): DTDs refused in every encoding,
size, depth and element count bounded at their limits, and nothing but MalformedReply raised."""

from __future__ import annotations

import pytest

from worker.wsman import MAX_DEPTH, MAX_ELEMENTS, MAX_REPLY_BYTES, MalformedReply, parse_envelope
from worker.wsman.namespaces import NS_SOAP


def _envelope(body: str, prolog: str = "") -> str:
    return f'{prolog}<s:Envelope xmlns:s="{NS_SOAP}"><s:Body>{body}</s:Body></s:Envelope>'


# Envelope and Body are two levels (and two elements) of every reply.
_FRAME = 2


def _nested(levels: int) -> str:
    return "<a>" * levels + "</a>" * levels


@pytest.mark.parametrize(
    "reply",
    [
        _envelope("<x/>", "<!DOCTYPE s:Envelope>").encode(),
        _envelope("<x/>", "<?xml version='1.0'?><?pi data?><!-- a comment --><!DOCTYPE s:Envelope>").encode(),
        _envelope("<x/>", '<!DOCTYPE s:Envelope SYSTEM "http://127.0.0.1:9/x.dtd">').encode(),
        _envelope("<x>&e;</x>", '<!DOCTYPE s:Envelope [<!ENTITY e "e">]>'),
        _envelope(
            "<x>&e;</x>", '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE s:Envelope [<!ENTITY e "e">]>'
        ).encode("utf-16"),
        _envelope("<x/>", '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE s:Envelope>').encode("utf-16-be"),
        _envelope("<x/>", '<?xml version="1.0" encoding="iso-8859-1"?><!DOCTYPE s:Envelope>').encode("latin-1"),
        _envelope("<x/>", f"<!--{'x' * 100_000}--><!DOCTYPE s:Envelope>").encode(),
    ],
    ids=["bare", "after-pi", "external", "str", "utf-16-bom", "utf-16-be", "latin-1", "after-100KB-comment"],
)
def test_any_dtd_is_refused_whatever_the_encoding_or_position(reply: bytes | str) -> None:
    """A DTD is refused when expat meets it: bytes or text, UTF-8, UTF-16 or Latin-1, after any comment."""
    with pytest.raises(MalformedReply, match="DTD"):
        parse_envelope(reply)


def test_nesting_up_to_the_depth_limit_parses_and_one_more_level_is_refused() -> None:
    """MAX_DEPTH levels parse; MAX_DEPTH + 1 raise MalformedReply."""
    parse_envelope(_envelope(_nested(MAX_DEPTH - _FRAME)))

    with pytest.raises(MalformedReply, match=f"deeper than {MAX_DEPTH}"):
        parse_envelope(_envelope(_nested(MAX_DEPTH - _FRAME + 1)))


def test_elements_up_to_the_count_limit_parse_and_one_more_is_refused() -> None:
    """MAX_ELEMENTS elements parse; one more raises MalformedReply."""
    parse_envelope(_envelope("<a/>" * (MAX_ELEMENTS - _FRAME)))

    with pytest.raises(MalformedReply, match=f"more than {MAX_ELEMENTS} elements"):
        parse_envelope(_envelope("<a/>" * (MAX_ELEMENTS - _FRAME + 1)))


def test_replies_over_the_size_cap_are_refused_before_parsing() -> None:
    """A reply of MAX_REPLY_BYTES parses; one byte more is refused unread."""
    frame = len(_envelope("<a></a>"))
    parse_envelope(_envelope(f"<a>{'x' * (MAX_REPLY_BYTES - frame)}</a>").encode())

    with pytest.raises(MalformedReply, match="exceeds"):
        parse_envelope(_envelope(f"<a>{'x' * (MAX_REPLY_BYTES - frame + 1)}</a>").encode())


def test_the_size_cap_is_twice_the_max_envelope_size_we_ask_for() -> None:
    """The cap follows the MaxEnvelopeSize every request sends (512,000 bytes)."""
    assert MAX_REPLY_BYTES == 1_024_000


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"", "not well-formed"),
        (b"\xff\xfe\x00", "not well-formed"),
        ("\ud800", "not well-formed"),
        (b'<?xml version="1.0" encoding="no-such-codec"?><a/>', "not well-formed"),
        (b"<a/>", "not a SOAP 1.2 Envelope"),
        (bytearray(b"<a/>"), "not XML text"),
    ],
)
def test_junk_raises_only_malformed_reply(reply: bytes | str, match: str) -> None:
    """Empty, undecodable, unknown-encoding, non-SOAP and non-text input raise MalformedReply."""
    with pytest.raises(MalformedReply, match=match):
        parse_envelope(reply)
