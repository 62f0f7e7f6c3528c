"""Build the WS-Man request envelopes the worker sends: Get, Put, Invoke, Enumerate, Pull, Release.

Pure functions: they return the UTF-8 bytes for pywinrm's `Protocol.send_message` plus the
MessageID used (to check the reply's RelatesTo) and the Action. The header follows the
[MS-WSMV] 4.1 examples and pypsrp's `WSMan._create_header`: SOAP 1.2, WS-Addressing
2004/08, with `a:To`, `w:ResourceURI`, `a:ReplyTo`, `a:Action`, `w:MaxEnvelopeSize`,
`a:MessageID`, `w:Locale`, `p:DataLocale`, `w:OperationTimeout` and `w:SelectorSet`.

Every text value and attribute is XML-escaped here, even though callers pass validated
values; characters XML 1.0 cannot carry at all are refused (`EnvelopeValueError`).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from worker.wsman.exceptions import EnvelopeValueError
from worker.wsman.namespaces import (
    ACTION_ENUMERATE,
    ACTION_GET,
    ACTION_PULL,
    ACTION_PUT,
    ACTION_RELEASE,
    ADDRESS_ANONYMOUS,
    DIALECT_WQL,
    NS_ADDRESSING,
    NS_ENUMERATION,
    NS_SOAP,
    NS_WSMAN,
    NS_WSMV,
    invoke_action,
)

__all__ = [
    "DEFAULT_LOCALE",
    "DEFAULT_MAX_ENVELOPE_SIZE_BYTES",
    "REFRESH_METHOD",
    "Envelope",
    "build_enumerate",
    "build_get",
    "build_invoke",
    "build_pull",
    "build_put",
    "build_release",
    "new_message_id",
]

DEFAULT_LOCALE = "en-US"
# WinRM's MaxEnvelopeSizekb defaults to 500 KiB since Windows Server 2012 (150 KiB on 2008 R2).
DEFAULT_MAX_ENVELOPE_SIZE_BYTES = 512_000
REFRESH_METHOD = "RefreshPkgSource"

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCALE_RE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
# Characters outside the XML 1.0 Char production (section 2.2): not representable even escaped.
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_XML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
_XML_ESCAPE_RE = re.compile("[&<>\"']")

_SAFE_REPR_MAX_CHARS = 64


def safe_repr(value: object) -> str:
    """`repr(value)` cut short: safe to put in an error message."""
    text = repr(value)
    return text if len(text) <= _SAFE_REPR_MAX_CHARS else text[: _SAFE_REPR_MAX_CHARS - 3] + "..."


_NAMESPACE_DECLARATIONS = (
    f'xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDRESSING}" xmlns:w="{NS_WSMAN}" xmlns:p="{NS_WSMV}" xmlns:n="{NS_ENUMERATION}"'
)


@dataclass(frozen=True)
class Envelope:
    """A request ready for `Protocol.send_message`: the bytes, its MessageID and its Action."""

    xml: bytes
    message_id: str
    action: str

    @property
    def text(self) -> str:
        """The envelope as `str`: pywinrm annotates `Protocol.send_message(message: str)`
        (its transport accepts bytes too and re-encodes str as UTF-8)."""
        return self.xml.decode("utf-8")


def new_message_id() -> str:
    """A fresh WS-Addressing MessageID in Windows' spelling: `uuid:<UPPER-CASE UUID>`."""
    return f"uuid:{str(uuid.uuid4()).upper()}"


def build_get(
    *,
    to_url: str,
    resource_uri: str,
    selectors: Mapping[str, str],
    operation_timeout_s: float,
    max_envelope_size_bytes: int = DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    locale: str = DEFAULT_LOCALE,
    message_id: str | None = None,
) -> Envelope:
    """A WS-Transfer Get of one instance ([MS-WSMV] 3.1.4.1.11): empty body."""
    return _envelope(
        action=ACTION_GET,
        to_url=to_url,
        resource_uri=resource_uri,
        selectors=selectors,
        operation_timeout_s=operation_timeout_s,
        max_envelope_size_bytes=max_envelope_size_bytes,
        locale=locale,
        message_id=message_id,
        body="",
    )


def build_put(
    *,
    to_url: str,
    resource_uri: str,
    selectors: Mapping[str, str],
    class_name: str,
    properties: Mapping[str, str],
    operation_timeout_s: float,
    max_envelope_size_bytes: int = DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    locale: str = DEFAULT_LOCALE,
    message_id: str | None = None,
) -> Envelope:
    """A WS-Transfer Put of some properties of one instance ([MS-WSMV] 3.1.4.1.12).

    Body: `<p:<Class> xmlns:p="<ResourceURI>"><p:<Name>>value</p:<Name>>...</p:<Class>>`; names
    are checked, values escaped (a NAL path's quotes and backslashes are plain text in XML).
    """
    name = _checked_name(class_name, "class name")
    children = "".join(
        f"<p:{_checked_name(prop, 'property name')}>{_text(value)}</p:{prop}>" for prop, value in properties.items()
    )
    return _envelope(
        action=ACTION_PUT,
        to_url=to_url,
        resource_uri=resource_uri,
        selectors=selectors,
        operation_timeout_s=operation_timeout_s,
        max_envelope_size_bytes=max_envelope_size_bytes,
        locale=locale,
        message_id=message_id,
        body=f"<p:{name} xmlns:p={_attr(resource_uri)}>{children}</p:{name}>",
    )


def build_invoke(
    *,
    to_url: str,
    resource_uri: str,
    selectors: Mapping[str, str],
    operation_timeout_s: float,
    method: str = REFRESH_METHOD,
    max_envelope_size_bytes: int = DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    locale: str = DEFAULT_LOCALE,
    message_id: str | None = None,
) -> Envelope:
    """A custom-action Invoke of a parameterless instance method ([MS-WSMV] 3.1.4.1.30).

    Body: `<p:<Method>_INPUT xmlns:p="<ResourceURI>"/>`, as in the spec's Win32_Service
    StopService example; the `p` prefix is rebound locally to the class namespace.
    """
    name = _checked_name(method, "method name")
    body = f"<p:{name}_INPUT xmlns:p={_attr(resource_uri)}/>"
    return _envelope(
        action=invoke_action(resource_uri, name),
        to_url=to_url,
        resource_uri=resource_uri,
        selectors=selectors,
        operation_timeout_s=operation_timeout_s,
        max_envelope_size_bytes=max_envelope_size_bytes,
        locale=locale,
        message_id=message_id,
        body=body,
    )


def build_enumerate(
    *,
    to_url: str,
    resource_uri: str,
    wql: str,
    max_elements: int,
    operation_timeout_s: float,
    max_envelope_size_bytes: int = DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    locale: str = DEFAULT_LOCALE,
    message_id: str | None = None,
) -> Envelope:
    """An optimized WQL Enumerate (DSP0226 8.2, [MS-WSMV] 3.1.4.1.14): the first page comes back at once."""
    body = (
        "<n:Enumerate><w:OptimizeEnumeration/>"
        f"<w:MaxElements>{_positive_int(max_elements, 'max_elements')}</w:MaxElements>"
        f"<w:Filter Dialect={_attr(DIALECT_WQL)}>{_text(wql)}</w:Filter></n:Enumerate>"
    )
    return _envelope(
        action=ACTION_ENUMERATE,
        to_url=to_url,
        resource_uri=resource_uri,
        selectors={},
        operation_timeout_s=operation_timeout_s,
        max_envelope_size_bytes=max_envelope_size_bytes,
        locale=locale,
        message_id=message_id,
        body=body,
    )


def build_pull(
    *,
    to_url: str,
    resource_uri: str,
    context: str,
    max_elements: int,
    operation_timeout_s: float,
    max_envelope_size_bytes: int = DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    locale: str = DEFAULT_LOCALE,
    message_id: str | None = None,
) -> Envelope:
    """A WS-Enumeration Pull of the next page of an enumeration context."""
    body = (
        f"<n:Pull><n:EnumerationContext>{_text(context)}</n:EnumerationContext>"
        f"<n:MaxElements>{_positive_int(max_elements, 'max_elements')}</n:MaxElements></n:Pull>"
    )
    return _envelope(
        action=ACTION_PULL,
        to_url=to_url,
        resource_uri=resource_uri,
        selectors={},
        operation_timeout_s=operation_timeout_s,
        max_envelope_size_bytes=max_envelope_size_bytes,
        locale=locale,
        message_id=message_id,
        body=body,
    )


def build_release(
    *,
    to_url: str,
    resource_uri: str,
    context: str,
    operation_timeout_s: float,
    max_envelope_size_bytes: int = DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    locale: str = DEFAULT_LOCALE,
    message_id: str | None = None,
) -> Envelope:
    """A WS-Enumeration Release: frees the server's context when we stop pulling early."""
    body = f"<n:Release><n:EnumerationContext>{_text(context)}</n:EnumerationContext></n:Release>"
    return _envelope(
        action=ACTION_RELEASE,
        to_url=to_url,
        resource_uri=resource_uri,
        selectors={},
        operation_timeout_s=operation_timeout_s,
        max_envelope_size_bytes=max_envelope_size_bytes,
        locale=locale,
        message_id=message_id,
        body=body,
    )


def _envelope(
    *,
    action: str,
    to_url: str,
    resource_uri: str,
    selectors: Mapping[str, str],
    operation_timeout_s: float,
    max_envelope_size_bytes: int,
    locale: str,
    message_id: str | None,
    body: str,
) -> Envelope:
    mid = new_message_id() if message_id is None else message_id
    lang = _checked_locale(locale)
    header = (
        f"<a:To>{_text(to_url)}</a:To>"
        f'<w:ResourceURI s:mustUnderstand="true">{_text(resource_uri)}</w:ResourceURI>'
        f'<a:ReplyTo><a:Address s:mustUnderstand="true">{ADDRESS_ANONYMOUS}</a:Address></a:ReplyTo>'
        f'<a:Action s:mustUnderstand="true">{_text(action)}</a:Action>'
        '<w:MaxEnvelopeSize s:mustUnderstand="true">'
        f"{_positive_int(max_envelope_size_bytes, 'max_envelope_size_bytes')}</w:MaxEnvelopeSize>"
        f"<a:MessageID>{_text(mid)}</a:MessageID>"
        f'<w:Locale xml:lang="{lang}" s:mustUnderstand="false"/>'
        f'<p:DataLocale xml:lang="{lang}" s:mustUnderstand="false"/>'
        f"<w:OperationTimeout>{_duration(operation_timeout_s)}</w:OperationTimeout>"
        f"{_selector_set(selectors)}"
    )
    document = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<s:Envelope {_NAMESPACE_DECLARATIONS}><s:Header>{header}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )
    return Envelope(xml=document.encode("utf-8"), message_id=mid, action=action)


def _selector_set(selectors: Mapping[str, str]) -> str:
    if not selectors:
        return ""
    items = "".join(
        f"<w:Selector Name={_attr(_checked_name(name, 'selector name'))}>{_text(value)}</w:Selector>"
        for name, value in selectors.items()
    )
    return f"<w:SelectorSet>{items}</w:SelectorSet>"


def _duration(timeout_s: float) -> str:
    """An xs:duration in the `PT<seconds>.<millis>S` form Windows itself sends."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
        raise EnvelopeValueError(f"operation_timeout_s must be a number, got {safe_repr(timeout_s)}")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise EnvelopeValueError(f"operation_timeout_s must be positive, got {safe_repr(timeout_s)}")
    return f"PT{timeout_s:.3f}S"


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EnvelopeValueError(f"{what} must be a positive integer, got {safe_repr(value)}")
    return value


def _checked_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise EnvelopeValueError(f"invalid {what} {safe_repr(value)}")
    return value


def _checked_locale(value: str) -> str:
    if not isinstance(value, str) or not _LOCALE_RE.fullmatch(value):
        raise EnvelopeValueError(f"invalid locale {safe_repr(value)}")
    return value


def _text(value: str) -> str:
    """`value` escaped for element text or a quoted attribute; refuses non-XML characters."""
    if not isinstance(value, str):
        raise EnvelopeValueError(f"expected text, got {safe_repr(value)}")
    if _XML_INVALID_RE.search(value):
        raise EnvelopeValueError(f"value {safe_repr(value)} holds characters XML cannot carry")
    return _XML_ESCAPE_RE.sub(lambda match: _XML_ESCAPES[match.group(0)], value)


def _attr(value: str) -> str:
    return f'"{_text(value)}"'
