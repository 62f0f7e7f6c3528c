"""The one XML parser for replies from the SMS Provider: no DTD in any encoding, bounded work.

SOAP forbids a DTD in a message (SOAP 1.2 part 1, 5), so none is accepted. The refusal happens
inside expat, when it reports the document type declaration, so it holds for every encoding
(UTF-8, UTF-16 with or without a BOM, Latin-1, ...) and wherever the DTD sits after leading
comments, and comes before any entity is declared or expanded.

Size, nesting depth and element count are bounded while parsing, and the input is fed in chunks
so parsing stops within one chunk of the limit: a hostile reply costs a few MB, not the
hundreds a tree of millions of elements would.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from worker.wsman.envelopes import DEFAULT_MAX_ENVELOPE_SIZE_BYTES
from worker.wsman.exceptions import MalformedReply
from worker.wsman.namespaces import NS_SOAP, qname

__all__ = ["MAX_DEPTH", "MAX_ELEMENTS", "MAX_REPLY_BYTES", "echo", "local_name", "parse_envelope"]

# The largest legitimate reply is bounded by the MaxEnvelopeSize every request sends (512,000
# bytes). Twice that leaves room for a server that counts characters where it should count
# bytes (a UTF-16 reply), and still refuses runaway input before expat sees it.
MAX_REPLY_BYTES = 2 * DEFAULT_MAX_ENVELOPE_SIZE_BYTES
# The deepest reply we read is a WMI provider fault: Envelope / Body / Fault / Detail /
# WSManFault / Message / ProviderFault / ExtendedError / SMS_ExtendedStatus / property: 10
# levels (an enumeration item with a cim:Datetime is 8). 64 leaves room for embedded objects.
MAX_DEPTH = 64
# The WMI plug-in writes at least ~10 bytes per element (`<p:A>0</p:A>`), so a reply within
# MaxEnvelopeSize holds fewer than ~51,000; a page of our default 100 packages of ~60
# properties holds ~6,500.
MAX_ELEMENTS = 50_000
# Parsing stops at the end of the chunk in which a limit was hit.
_FEED_CHUNK = 64 * 1024
_MAX_MESSAGE_ECHO_CHARS = 120
_QUOTES = "'\""


_TREE_START = ET.TreeBuilder.start
_TREE_END = ET.TreeBuilder.end


class _BoundedTreeBuilder(ET.TreeBuilder):
    """ElementTree's tree builder, refusing a DTD and counting depth and elements as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._elements = 0

    def doctype(self, name: str | None, pubid: str | None, system: str | None) -> None:
        """Called by expat at `<!DOCTYPE`, before any entity declaration is read."""
        raise MalformedReply("reply contains a DTD, which SOAP forbids")

    # Called once per element (an enumeration page has tens of thousands): the base class's C
    # methods are called directly, without super()'s lookup.
    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        depth = self._depth = self._depth + 1
        elements = self._elements = self._elements + 1
        if depth > MAX_DEPTH:
            raise MalformedReply(f"reply nests elements deeper than {MAX_DEPTH}")
        if elements > MAX_ELEMENTS:
            raise MalformedReply(f"reply holds more than {MAX_ELEMENTS} elements")
        return _TREE_START(self, tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return _TREE_END(self, tag)


def parse_envelope(xml: bytes | str) -> ET.Element:
    """The root `s:Envelope` of a reply; MalformedReply for anything else or unsafe XML."""
    if not isinstance(xml, bytes | str):
        raise MalformedReply(f"reply is {type(xml).__name__}, not XML text")
    if len(xml) > MAX_REPLY_BYTES:
        raise MalformedReply(f"reply of {len(xml)} bytes exceeds {MAX_REPLY_BYTES}")
    parser = ET.XMLParser(target=_BoundedTreeBuilder())
    try:
        for start in range(0, len(xml), _FEED_CHUNK):
            parser.feed(xml[start : start + _FEED_CHUNK])
        root = parser.close()
    except (ET.ParseError, ValueError, LookupError, UnicodeError, OverflowError) as exc:
        if isinstance(exc, MalformedReply):
            raise
        raise MalformedReply(f"reply is not well-formed XML: {echo(str(exc)).strip(_QUOTES)}") from None
    if root.tag != qname(NS_SOAP, "Envelope"):
        raise MalformedReply(f"reply root is {echo(root.tag)}, not a SOAP 1.2 Envelope")
    return root


def local_name(tag: str) -> str:
    """The local part of ElementTree's `{namespace}local` tag."""
    return tag.rsplit("}", 1)[-1]


def echo(value: object) -> str:
    """A reply value quoted for an error message, cut short: replies are not ours to trust."""
    text = repr(value)
    return text if len(text) <= _MAX_MESSAGE_ECHO_CHARS else text[: _MAX_MESSAGE_ECHO_CHARS - 3] + "..."
