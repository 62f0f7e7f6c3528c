"""Parse SOAP faults from WinRM / the WMI plug-in into `FaultInfo` values.

A fault ([MS-WSMV] 2.2.4.14, 3.1.4.1.x; DSP0226 14) carries `s:Code/s:Value`,
`s:Code/s:Subcode/s:Value`, `s:Reason/s:Text` and an `s:Detail` holding some of:

* `f:WSManFault Code="..." Machine="..."` with an `f:Message`; a provider error nests
  `f:Message/f:ProviderFault provider="WMI Provider" path="...WsmWmiPl.dll"` holding an inner
  `f:WSManFault` and `f:ExtendedError/p:__ExtendedStatus` (`p:SMS_ExtendedStatus` from the
  SMS Provider);
* `p:MSFT_WmiError` with `error_Code` (a WMI or WS-Man HRESULT);
* `w:FaultDetail` (a URI such as `.../faultDetail/InvalidResourceURI`).

Parsing is liberal (every part is optional) and says nothing about what a fault means: that is
`worker.provider.classify.fault_to_error`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from worker.wsman.faultinfo import ExtendedStatus, FaultInfo, ProviderFault
from worker.wsman.namespaces import NS_SOAP, NS_WSMAN, NS_WSMANFAULT, NS_XSI, qname
from worker.wsman.soap_parser import local_name, parse_envelope

__all__ = ["fault_from_element", "is_wmi_hresult", "parse_fault"]

# WMI HRESULTs are facility ITF (wbemcli.h WbemErrorEnum): 0x8004xxxx.
_WMI_HRESULT_MIN = 0x80040000
_WMI_HRESULT_MAX = 0x8004FFFF
_HRESULT_MASK = 0xFFFFFFFF
_TRUE_VALUES = frozenset({"true", "1"})
_XSI_NIL = qname(NS_XSI, "nil")
_EXTENDED_STATUS_CLASSES = frozenset({"__ExtendedStatus", "SMS_ExtendedStatus"})
_EXTENDED_STATUS_FIELDS = {
    "Description": "description",
    "ErrorCode": "error_code",
    "Operation": "operation",
    "ParameterInfo": "parameter_info",
    "ProviderName": "provider_name",
    "StatusCode": "status_code",
}
_EXTENDED_STATUS_INT_FIELDS = frozenset({"error_code", "status_code"})


def is_wmi_hresult(code: int | None) -> bool:
    """True for a WMI HRESULT (facility ITF, 0x8004xxxx)."""
    return code is not None and _WMI_HRESULT_MIN <= code <= _WMI_HRESULT_MAX


def parse_fault(xml: bytes | str) -> FaultInfo | None:
    """The fault in a reply, None when its Body holds no Fault; MalformedReply if not XML/SOAP."""
    body = parse_envelope(xml).find(qname(NS_SOAP, "Body"))
    fault = body.find(qname(NS_SOAP, "Fault")) if body is not None else None
    return fault_from_element(fault) if fault is not None else None


def fault_from_element(fault: ET.Element) -> FaultInfo:
    """Parse an `s:Fault` element (liberal: every part is optional)."""
    detail = fault.find(qname(NS_SOAP, "Detail"))
    wsman = detail.find(qname(NS_WSMANFAULT, "WSManFault")) if detail is not None else None
    provider = _provider_fault(wsman) if wsman is not None else None
    wmi_error = _wmi_error_fields(detail) if detail is not None else {}
    extended = _extended_status(detail) if detail is not None else None
    wsman_code = _code(wsman.get("Code")) if wsman is not None else None
    return FaultInfo(
        code=_text(fault.find(f"{qname(NS_SOAP, 'Code')}/{qname(NS_SOAP, 'Value')}")),
        subcode=_text(fault.find(f"{qname(NS_SOAP, 'Code')}/{qname(NS_SOAP, 'Subcode')}/{qname(NS_SOAP, 'Value')}")),
        reason=_first_text(fault.findall(f"{qname(NS_SOAP, 'Reason')}/{qname(NS_SOAP, 'Text')}")),
        wsman_code=wsman_code,
        machine=_clean(wsman.get("Machine")) if wsman is not None else None,
        message=_own_text(wsman.find(qname(NS_WSMANFAULT, "Message"))) if wsman is not None else None,
        provider_fault=provider,
        wmi_error_code=_wmi_error_code(wmi_error, provider, wsman_code, extended),
        extended_status=extended,
        fault_detail=_text(detail.find(qname(NS_WSMAN, "FaultDetail"))) if detail is not None else None,
        wmi_error=wmi_error,
    )


def _provider_fault(wsman: ET.Element) -> ProviderFault | None:
    element = next(wsman.iter(qname(NS_WSMANFAULT, "ProviderFault")), None)
    if element is None:
        return None
    inner = element.find(qname(NS_WSMANFAULT, "WSManFault"))
    inner_message = inner.find(qname(NS_WSMANFAULT, "Message")) if inner is not None else None
    return ProviderFault(
        provider=_clean(element.get("provider")),
        path=_clean(element.get("path")),
        wsman_code=_code(inner.get("Code")) if inner is not None else None,
        machine=_clean(inner.get("Machine")) if inner is not None else None,
        message=_clean("".join(inner_message.itertext())) if inner_message is not None else None,
        text=_own_text(element),
    )


def _wmi_error_fields(detail: ET.Element) -> dict[str, str | None]:
    element = next((el for el in detail.iter() if local_name(el.tag) == "MSFT_WmiError"), None)
    if element is None:
        return {}
    return {local_name(child.tag): _value(child) for child in element}


def _extended_status(detail: ET.Element) -> ExtendedStatus | None:
    element = _extended_status_element(detail)
    if element is None:
        return None
    known: dict[str, str | None] = {}
    extra: dict[str, str] = {}
    for child in element:
        name = local_name(child.tag)
        value = _value(child)
        if name in _EXTENDED_STATUS_FIELDS:
            known[_EXTENDED_STATUS_FIELDS[name]] = value
        elif value is not None:
            extra[name] = value
    numbers: dict[str, int | None] = {}
    for name in _EXTENDED_STATUS_INT_FIELDS:
        raw = known.pop(name, None)
        numbers[name] = _code(raw)
        if raw is not None and numbers[name] is None:
            extra[name] = raw  # keep what we could not read as a number
    return ExtendedStatus(
        class_name=local_name(element.tag),
        description=known.get("description"),
        error_code=numbers["error_code"],
        operation=known.get("operation"),
        parameter_info=known.get("parameter_info"),
        provider_name=known.get("provider_name"),
        status_code=numbers["status_code"],
        extra=extra,
    )


def _extended_status_element(detail: ET.Element) -> ET.Element | None:
    for container in detail.iter(qname(NS_WSMANFAULT, "ExtendedError")):
        first = next(iter(container), None)
        if first is not None:
            return first
    return next((el for el in detail.iter() if local_name(el.tag) in _EXTENDED_STATUS_CLASSES), None)


def _wmi_error_code(
    wmi_error: dict[str, str | None],
    provider: ProviderFault | None,
    wsman_code: int | None,
    extended: ExtendedStatus | None,
) -> int | None:
    explicit = _code(wmi_error.get("error_Code"))
    if explicit is not None:
        return explicit
    candidates = (
        provider.wsman_code if provider else None,
        wsman_code,
        extended.status_code if extended else None,
    )
    return next((code for code in candidates if is_wmi_hresult(code)), None)


def _code(raw: str | None) -> int | None:
    """A numeric code as Windows writes it: decimal, `0x` hex, or a signed 32-bit HRESULT."""
    if raw is None:
        return None
    text = raw.strip()
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None
    return value & _HRESULT_MASK if value < 0 else value


def _value(element: ET.Element) -> str | None:
    if element.get(_XSI_NIL, "").strip().lower() in _TRUE_VALUES:
        return None
    return _clean("".join(element.itertext()))


def _text(element: ET.Element | None) -> str | None:
    return _clean("".join(element.itertext())) if element is not None else None


def _first_text(elements: list[ET.Element]) -> str | None:
    return next((text for text in (_text(el) for el in elements) if text), None)


def _own_text(element: ET.Element | None) -> str | None:
    """The element's own text, without its children's (f:Message around a ProviderFault)."""
    return _clean(element.text) if element is not None else None


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    stripped = text.strip()
    return stripped or None
