"""Tiny WS-Man request builders and reply readers for emulator tests (not the product's client).

Envelopes follow [MS-WSMV] 4.1 as pywinrm would send them through
`Protocol.send_message`: WS-Addressing header, ResourceURI, Action, MessageID, OperationTimeout,
and a SelectorSet for instance operations. Values are XML-escaped.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "ACTION_ENUMERATE",
    "ACTION_GET",
    "ACTION_PULL",
    "ACTION_PUT",
    "NS",
    "class_uri",
    "enumerate_envelope",
    "enumeration_page",
    "get_envelope",
    "instance_envelope",
    "invoke_envelope",
    "pull_envelope",
    "relates_to",
    "return_value",
]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "n": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
}
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
ACTION_PULL = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
ACTION_PUT = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Put"
_WMI_BASE = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_"
_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_WQL_DIALECT = "http://schemas.microsoft.com/wbem/wsman/1/WQL"
_OPERATION_TIMEOUT_S = 20.0  # pywinrm's default operation_timeout_sec


def class_uri(site_code: str, class_name: str) -> str:
    """Resource URI of a WMI class in the site's namespace (`*` for WQL enumeration)."""
    return f"{_WMI_BASE}{site_code.lower()}/{class_name}"


def _envelope(
    *,
    endpoint: str,
    resource_uri: str,
    action: str,
    message_id: str,
    body: str,
    selectors: dict[str, str] | None = None,
    operation_timeout_s: float = _OPERATION_TIMEOUT_S,
) -> str:
    selector_xml = ""
    if selectors:
        inner = "".join(
            f"<w:Selector Name={quoteattr(name)}>{escape(value)}</w:Selector>" for name, value in selectors.items()
        )
        selector_xml = f"<w:SelectorSet>{inner}</w:SelectorSet>"
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:n="{NS["n"]}"'
        f' xmlns:p="{NS["p"]}">'
        "<s:Header>"
        f"<a:To>{escape(endpoint)}</a:To>"
        f'<w:ResourceURI s:mustUnderstand="true">{escape(resource_uri)}</w:ResourceURI>'
        f'<a:ReplyTo><a:Address s:mustUnderstand="true">{_ANONYMOUS}</a:Address></a:ReplyTo>'
        f'<a:Action s:mustUnderstand="true">{escape(action)}</a:Action>'
        '<w:MaxEnvelopeSize s:mustUnderstand="true">153600</w:MaxEnvelopeSize>'
        f"<a:MessageID>{escape(message_id)}</a:MessageID>"
        '<w:Locale xml:lang="en-US" s:mustUnderstand="false"/>'
        '<p:DataLocale xml:lang="en-US" s:mustUnderstand="false"/>'
        f"<w:OperationTimeout>PT{operation_timeout_s:.3f}S</w:OperationTimeout>"
        f"{selector_xml}"
        "</s:Header>"
        f"<s:Body>{body}</s:Body>"
        "</s:Envelope>"
    )


def _message_id(message_id: str | None) -> str:
    return message_id or f"uuid:{str(uuid.uuid4()).upper()}"


def invoke_envelope(
    endpoint: str,
    site_code: str,
    package_id: str,
    *,
    class_name: str = "SMS_Package",
    method: str = "RefreshPkgSource",
    message_id: str | None = None,
    operation_timeout_s: float = _OPERATION_TIMEOUT_S,
) -> str:
    """Invoke an instance method (default RefreshPkgSource) on a package."""
    uri = class_uri(site_code, class_name)
    return _envelope(
        endpoint=endpoint,
        resource_uri=uri,
        action=f"{uri}/{method}",
        message_id=_message_id(message_id),
        selectors={"PackageID": package_id},
        body=f'<p:{method}_INPUT xmlns:p="{escape(uri)}"/>',
        operation_timeout_s=operation_timeout_s,
    )


def get_envelope(
    endpoint: str,
    site_code: str,
    package_id: str,
    *,
    class_name: str = "SMS_Package",
    message_id: str | None = None,
    operation_timeout_s: float = _OPERATION_TIMEOUT_S,
) -> str:
    """WS-Transfer Get of one package instance."""
    return _envelope(
        endpoint=endpoint,
        resource_uri=class_uri(site_code, class_name),
        action=ACTION_GET,
        message_id=_message_id(message_id),
        selectors={"PackageID": package_id},
        body="",
        operation_timeout_s=operation_timeout_s,
    )


def enumerate_envelope(
    endpoint: str, site_code: str, wql: str, *, max_elements: int = 32, message_id: str | None = None
) -> str:
    """WS-Enumeration Enumerate with a WQL filter (optimized: first items in the reply)."""
    return _envelope(
        endpoint=endpoint,
        resource_uri=class_uri(site_code, "*"),
        action=ACTION_ENUMERATE,
        message_id=_message_id(message_id),
        body=(
            "<n:Enumerate><w:OptimizeEnumeration/>"
            f"<w:MaxElements>{max_elements}</w:MaxElements>"
            f'<w:Filter Dialect="{_WQL_DIALECT}">{escape(wql)}</w:Filter>'
            "</n:Enumerate>"
        ),
    )


def pull_envelope(endpoint: str, site_code: str, context: str, *, max_elements: int = 32) -> str:
    """WS-Enumeration Pull of the next page of an enumeration context."""
    return _envelope(
        endpoint=endpoint,
        resource_uri=class_uri(site_code, "*"),
        action=ACTION_PULL,
        message_id=_message_id(None),
        body=(
            f"<n:Pull><n:EnumerationContext>{escape(context)}</n:EnumerationContext>"
            f"<n:MaxElements>{max_elements}</n:MaxElements></n:Pull>"
        ),
    )


def instance_envelope(
    endpoint: str,
    site_code: str,
    class_name: str,
    selectors: dict[str, str],
    *,
    action: str = ACTION_GET,
    properties: dict[str, str] | None = None,
) -> str:
    """A Get (or, with `action=ACTION_PUT` and `properties`, a Put) of an instance named by selectors."""
    uri = class_uri(site_code, class_name)
    body = ""
    if properties is not None:
        children = "".join(f"<p:{name}>{escape(value)}</p:{name}>" for name, value in properties.items())
        body = f"<p:{class_name} xmlns:p={quoteattr(uri)}>{children}</p:{class_name}>"
    return _envelope(
        endpoint=endpoint,
        resource_uri=uri,
        action=action,
        message_id=_message_id(None),
        selectors=selectors,
        body=body,
    )


def enumeration_page(reply: bytes) -> tuple[list[dict[str, str | None]], str | None]:
    """An Enumerate / Pull reply's instances (local name -> text, None when nil) and its next context."""
    root = ET.fromstring(reply)
    items: list[dict[str, str | None]] = []
    for container in root.iter():
        if container.tag.endswith("}Items"):
            for instance in container:
                items.append(
                    {
                        child.tag.rsplit("}", 1)[-1]: None
                        if child.get("{http://www.w3.org/2001/XMLSchema-instance}nil") == "true"
                        else "".join(child.itertext())
                        for child in instance
                    }
                )
    ended = any(element.tag.endswith("}EndOfSequence") for element in root.iter())
    context = root.find(".//n:EnumerationContext", NS)
    return items, None if ended or context is None else context.text


def relates_to(reply: bytes) -> str | None:
    """The reply's `a:RelatesTo` (the request MessageID it answers)."""
    node = ET.fromstring(reply).find("s:Header/a:RelatesTo", NS)
    return node.text if node is not None else None


def return_value(reply: bytes) -> int:
    """`ReturnValue` of a method's `_OUTPUT` body, whatever its prefix."""
    for element in ET.fromstring(reply).iter():
        if element.tag.endswith("}ReturnValue") and element.text is not None:
            return int(element.text)
    raise ValueError("reply holds no ReturnValue")
