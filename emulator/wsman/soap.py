"""Parse WS-Management requests into a frozen dataclass; render replies the way WinRM does.

Parsing is liberal in prefixes and whitespace (clients differ) and strict in structure: an
envelope that is not SOAP 1.2 with a Header and a Body raises `SoapError`, which the provider
turns into a Windows-shaped fault. Replies are string templates with every echoed value escaped,
which keeps a Get or Invoke reply at a few microseconds. The instances inside a reply are the
SMS Provider's to render (emulator.sms.instance_xml).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from emulator.wsman.namespaces import (
    ACTION_ENUMERATE_RESPONSE,
    ACTION_GET_RESPONSE,
    ACTION_PULL_RESPONSE,
    ACTION_PUT_RESPONSE,
    ACTION_RELEASE_RESPONSE,
    ANONYMOUS,
    NS,
)

__all__ = [
    "SoapError",
    "WsmanRequest",
    "envelope",
    "escape",
    "new_message_id",
    "operation_timeout_s",
    "parse_request",
    "render_enumerate_response",
    "render_get_response",
    "render_invoke_response",
    "render_pull_response",
    "render_put_response",
    "render_release_response",
]

SoapErrorKind = Literal["not_xml", "schema", "missing_header"]

_T_ENVELOPE: Final = f"{{{NS.s}}}Envelope"
_T_HEADER: Final = f"{{{NS.s}}}Header"
_T_BODY: Final = f"{{{NS.s}}}Body"
_T_ACTION: Final = f"{{{NS.a}}}Action"
_T_MESSAGE_ID: Final = f"{{{NS.a}}}MessageID"
_T_RESOURCE_URI: Final = f"{{{NS.w}}}ResourceURI"
_T_SELECTOR_SET: Final = f"{{{NS.w}}}SelectorSet"
_T_SELECTOR: Final = f"{{{NS.w}}}Selector"
_T_OPERATION_TIMEOUT: Final = f"{{{NS.w}}}OperationTimeout"
_T_OPTIMIZE: Final = f"{{{NS.w}}}OptimizeEnumeration"
_T_W_MAX_ELEMENTS: Final = f"{{{NS.w}}}MaxElements"
_T_N_MAX_ELEMENTS: Final = f"{{{NS.n}}}MaxElements"
_T_FILTER: Final = f"{{{NS.w}}}Filter"
_T_CONTEXT: Final = f"{{{NS.n}}}EnumerationContext"
_T_ENUMERATE: Final = f"{{{NS.n}}}Enumerate"
_T_PULL: Final = f"{{{NS.n}}}Pull"
_T_RELEASE: Final = f"{{{NS.n}}}Release"

_DURATION_RE: Final = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_MAX_ELEMENTS_LIMIT: Final = 1_000_000
_MAX_BODY_PROPERTIES: Final = 256  # a WMI instance has tens of properties; bounds the copy
_XSI_NIL: Final = f"{{{NS.xsi}}}nil"


class SoapError(ValueError):
    """The request is not a WS-Management envelope we can act on."""

    def __init__(self, kind: SoapErrorKind, message: str, *, message_id: str | None = None) -> None:
        super().__init__(message)
        self.kind: SoapErrorKind = kind
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class WsmanRequest:
    """What the provider needs from one request; `body_tag` is the Clark name of the body's element."""

    action: str
    message_id: str
    resource_uri: str | None = None
    selectors: tuple[tuple[str, str], ...] = ()
    body_tag: str | None = None
    operation_timeout_s: float | None = None
    optimize: bool = False
    max_elements: int | None = None
    filter_text: str | None = None
    filter_dialect: str | None = None
    enumeration_context: str | None = None
    # A Put's instance (or any other body element's children): (local name, text or None if nil).
    body_properties: tuple[tuple[str, str | None], ...] = ()

    def selector(self, name: str) -> str | None:
        """A selector's value by case-insensitive name."""
        lowered = name.lower()
        for key, value in self.selectors:
            if key.lower() == lowered:
                return value
        return None


def _text(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    return (element.text or "").strip()


def _duration_s(text: str | None) -> float | None:
    """xs:duration as WinRM sends it (PT20S, PT20.000S, PT1M30S); None when absent or odd."""
    if not text:
        return None
    match = _DURATION_RE.match(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86_400 + int(hours or 0) * 3_600 + int(minutes or 0) * 60 + float(seconds or 0)


def _max_elements(element: ET.Element | None, message_id: str) -> int | None:
    text = _text(element)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise SoapError("schema", f"MaxElements {text[:40]!r} is not an integer", message_id=message_id) from None
    if not 1 <= value <= _MAX_ELEMENTS_LIMIT:
        raise SoapError("schema", f"MaxElements {value} is out of range", message_id=message_id)
    return value


def _body_fields(body_element: ET.Element, message_id: str) -> dict[str, object]:
    """Enumerate / Pull / Release parameters ([MS-WSMV] 3.1.4.8-3.1.4.10)."""
    fields: dict[str, object] = {}
    if body_element.tag == _T_ENUMERATE:
        filter_element = body_element.find(_T_FILTER)
        fields["optimize"] = body_element.find(_T_OPTIMIZE) is not None
        fields["max_elements"] = _max_elements(body_element.find(_T_W_MAX_ELEMENTS), message_id)
        if filter_element is not None:
            fields["filter_text"] = "".join(filter_element.itertext()).strip()
            fields["filter_dialect"] = filter_element.get("Dialect")
    elif body_element.tag in (_T_PULL, _T_RELEASE):
        fields["enumeration_context"] = _text(body_element.find(_T_CONTEXT))
        fields["max_elements"] = _max_elements(body_element.find(_T_N_MAX_ELEMENTS), message_id)
    elif len(body_element):
        if len(body_element) > _MAX_BODY_PROPERTIES:
            raise SoapError("schema", "the body holds too many properties", message_id=message_id)
        fields["body_properties"] = tuple(
            (
                child.tag.rsplit("}", 1)[-1],
                None if child.get(_XSI_NIL, "").strip().lower() == "true" else "".join(child.itertext()).strip(),
            )
            for child in body_element
        )
    return fields


def parse_request(data: bytes) -> WsmanRequest:
    """Parse one SOAP 1.2 WS-Management request; raises SoapError for anything malformed."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        # SOAP 1.2 forbids a DTD (section 5); refusing it also rules out entity expansion.
        raise SoapError("schema", "the SOAP message contains a document type declaration")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SoapError("not_xml", f"the request is not well-formed XML: {exc}") from None
    if root.tag != _T_ENVELOPE:
        raise SoapError("schema", "the root element is not a SOAP 1.2 Envelope")
    header = root.find(_T_HEADER)
    body = root.find(_T_BODY)

    headers: dict[str, ET.Element] = {}
    if header is not None:
        for child in header:
            headers.setdefault(child.tag, child)
    message_id = _text(headers.get(_T_MESSAGE_ID)) or None
    if header is None or body is None:
        raise SoapError("schema", "the SOAP envelope needs a Header and a Body", message_id=message_id)
    action = _text(headers.get(_T_ACTION))
    if not message_id:
        raise SoapError("missing_header", "the request has no wsa:MessageID")
    if not action:
        raise SoapError("missing_header", "the request has no wsa:Action", message_id=message_id)

    selectors: list[tuple[str, str]] = []
    selector_set = headers.get(_T_SELECTOR_SET)
    if selector_set is not None:
        for selector in selector_set.iter(_T_SELECTOR):
            selectors.append((selector.get("Name", ""), (selector.text or "").strip()))

    body_element = next(iter(body), None)
    fields = {} if body_element is None else _body_fields(body_element, message_id)
    return WsmanRequest(
        action=action,
        message_id=message_id,
        resource_uri=_text(headers.get(_T_RESOURCE_URI)) or None,
        selectors=tuple(selectors),
        body_tag=None if body_element is None else body_element.tag,
        operation_timeout_s=_duration_s(_text(headers.get(_T_OPERATION_TIMEOUT))),
        **fields,  # type: ignore[arg-type]  # keys and types are the dataclass's, set just above
    )


def operation_timeout_s(envelope: bytes) -> float | None:
    """The request's w:OperationTimeout in seconds (None when absent or the envelope is unusable)."""
    try:
        return parse_request(envelope).operation_timeout_s
    except SoapError:
        return None


# --------------------------------------------------------------------------- rendering


def escape(text: str) -> str:
    """Escape text for an element or a double-quoted attribute."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    return text


def new_message_id() -> str:
    return f"uuid:{str(uuid.uuid4()).upper()}"


_ENVELOPE_OPEN: Final = (
    f'<s:Envelope xml:lang="en-US" xmlns:s="{NS.s}" xmlns:a="{NS.a}" xmlns:x="{NS.x}" xmlns:e="{NS.e}" '
    f'xmlns:n="{NS.n}" xmlns:w="{NS.w}" xmlns:p="{NS.p}"><s:Header><a:Action>'
)
_TO: Final = f"<a:To>{ANONYMOUS}</a:To>"


def envelope(action: str, relates_to: str | None, body: str) -> bytes:
    """A reply envelope: fresh MessageID, anonymous To, RelatesTo when the request had an id."""
    relates = "" if relates_to is None else f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
    return (
        f"{_ENVELOPE_OPEN}{escape(action)}</a:Action><a:MessageID>{new_message_id()}</a:MessageID>"
        f"{_TO}{relates}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def render_get_response(relates_to: str, instance_xml: str) -> bytes:
    return envelope(ACTION_GET_RESPONSE, relates_to, instance_xml)


def render_put_response(relates_to: str, instance_xml: str) -> bytes:
    """WS-Transfer PutResponse: the instance as it now is."""
    return envelope(ACTION_PUT_RESPONSE, relates_to, instance_xml)


def render_invoke_response(relates_to: str, class_uri: str, method: str, return_value: int) -> bytes:
    """[MS-WSMV] 3.1.4.1.27: custom action reply, `<Method>_OUTPUT` with ReturnValue."""
    uri = escape(class_uri)
    body = (
        f'<p:{method}_OUTPUT xmlns:xsi="{NS.xsi}" xmlns:p="{uri}" xmlns:cim="{NS.cim}">'
        f"<p:ReturnValue>{return_value}</p:ReturnValue></p:{method}_OUTPUT>"
    )
    return envelope(f"{class_uri}/{method}Response", relates_to, body)


def render_enumerate_response(
    relates_to: str, context: str, items: Iterable[str], *, optimized: bool, end: bool
) -> bytes:
    """DSP0226 8.2.3: an optimized Enumerate carries the first page in w:Items."""
    page = f"<w:Items>{''.join(items)}</w:Items>" if optimized else ""
    eos = "<w:EndOfSequence/>" if optimized and end else ""
    body = (
        f"<n:EnumerateResponse><n:EnumerationContext>{escape(context)}</n:EnumerationContext>"
        f"{page}{eos}</n:EnumerateResponse>"
    )
    return envelope(ACTION_ENUMERATE_RESPONSE, relates_to, body)


def render_pull_response(relates_to: str, context: str | None, items: Iterable[str], *, end: bool) -> bytes:
    """WS-Enumeration 3.2: the last page carries EndOfSequence and no context."""
    context_xml = "" if end or context is None else f"<n:EnumerationContext>{escape(context)}</n:EnumerationContext>"
    eos = "<n:EndOfSequence/>" if end else ""
    body = f"<n:PullResponse>{context_xml}<n:Items>{''.join(items)}</n:Items>{eos}</n:PullResponse>"
    return envelope(ACTION_PULL_RESPONSE, relates_to, body)


def render_release_response(relates_to: str) -> bytes:
    return envelope(ACTION_RELEASE_RESPONSE, relates_to, "")
