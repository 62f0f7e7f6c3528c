"""Parse SOAP faults from WinRM / the WMI plug-in and map them to the worker's errors by meaning.

A fault ([MS-WSMV] 2.2.4.14, 3.1.4.1.x; DSP0226 14) carries `s:Code/s:Value`,
`s:Code/s:Subcode/s:Value`, `s:Reason/s:Text` and an `s:Detail` holding some of:

* `f:WSManFault Code="..." Machine="..."` with an `f:Message`; a provider error nests
  `f:Message/f:ProviderFault provider="WMI Provider" path="...WsmWmiPl.dll"` holding an inner
  `f:WSManFault` and `f:ExtendedError/p:__ExtendedStatus` (`p:SMS_ExtendedStatus` from the
  SMS Provider);
* `p:MSFT_WmiError` with `error_Code` (a WMI or WS-Man HRESULT);
* `w:FaultDetail` (a URI such as `.../faultDetail/InvalidResourceURI`).

Mapping looks at the most specific code first (the WMI error code, then the provider's
inner WSManFault code, then the outer one), then at the subcode, then falls back to
`ProviderFailureError`. Messages are built from fault text only, never from request data.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from worker.errors import (
    AccessDeniedError,
    ConfigError,
    ExtendedStatus,
    InvalidRequestError,
    NotFoundError,
    OperationTimeoutError,
    ProviderFailureError,
    QuotaError,
    RefreshError,
)
from worker.wsman.namespaces import NS_SOAP, NS_WSMAN, NS_WSMANFAULT, NS_XSI, qname
from worker.wsman.replies import parse_envelope

__all__ = [
    "ERROR_ACCESS_DENIED",
    "E_ACCESSDENIED",
    "WBEM_E_ACCESS_DENIED",
    "WBEM_E_FAILED",
    "WBEM_E_INVALID_CLASS",
    "WBEM_E_INVALID_NAMESPACE",
    "WBEM_E_INVALID_PARAMETER",
    "WBEM_E_INVALID_QUERY",
    "WBEM_E_NOT_FOUND",
    "WBEM_E_PROVIDER_FAILURE",
    "WSMAN_CANNOT_PROCESS_FILTER",
    "WSMAN_DESTINATION_UNREACHABLE",
    "WSMAN_INVALID_HEADER",
    "WSMAN_INVALID_SELECTORS",
    "WSMAN_QUOTA_MAX_OPERATIONS_USER",
    "WSMAN_QUOTA_MAX_SHELLS_USER",
    "WSMAN_SCHEMA_VALIDATION",
    "WSMAN_TIMED_OUT",
    "FaultInfo",
    "ProviderFault",
    "fault_from_element",
    "fault_to_error",
    "is_wmi_hresult",
    "parse_fault",
]

# WMI HRESULTs (WbemErrorEnum, wbemcli.h).
WBEM_E_FAILED = 0x80041001
WBEM_E_NOT_FOUND = 0x80041002
WBEM_E_ACCESS_DENIED = 0x80041003
WBEM_E_PROVIDER_FAILURE = 0x80041004
WBEM_E_TYPE_MISMATCH = 0x80041005
WBEM_E_INVALID_PARAMETER = 0x80041008
WBEM_E_NOT_SUPPORTED = 0x8004100C
WBEM_E_INVALID_NAMESPACE = 0x8004100E
WBEM_E_INVALID_CLASS = 0x80041010
WBEM_E_INVALID_OPERATION = 0x80041016
WBEM_E_INVALID_QUERY = 0x80041017
WBEM_E_INVALID_QUERY_TYPE = 0x80041018
WBEM_E_QUOTA_VIOLATION = 0x8004106C
_WMI_HRESULT_MIN = 0x80040000
_WMI_HRESULT_MAX = 0x8004FFFF

# WSManFault codes seen on real servers (DESIGN.md section 2; winerror.h ERROR_WSMAN_*).
WSMAN_DESTINATION_UNREACHABLE = 2150858752  # 0x80338000 resource/instance not found
WSMAN_INVALID_HEADER = 2150858767  # 0x8033800F invalid SOAP header (e.g. a bad timeout)
WSMAN_CANNOT_PROCESS_FILTER = 2150858778  # 0x8033801A class not found / bad WQL
WSMAN_TIMED_OUT = 2150858793  # 0x80338029 OperationTimeout elapsed
WSMAN_SCHEMA_VALIDATION = 2150858817  # 0x80338041
WSMAN_INVALID_SELECTORS = 2150858843  # 0x8033805B
WSMAN_URI_WITHOUT_KEYS = 2150859002  # 0x803380FA class is not a singleton: keys needed
WSMAN_QUOTA_MAX_SHELLS_USER = 2150859173  # 0x803381A5
WSMAN_QUOTA_MAX_OPERATIONS_USER = 2150859174  # 0x803381A6
ERROR_ACCESS_DENIED = 5
E_ACCESSDENIED = 0x80070005

_HRESULT_MASK = 0xFFFFFFFF
_MAX_TEXT_CHARS = 400
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

_ByMeaning = type[RefreshError]

# By code, whatever carried it (MSFT_WmiError, inner or outer WSManFault). Generic failures
# (WBEM_E_FAILED, WBEM_E_PROVIDER_FAILURE, WS-Man InternalError) are deliberately absent:
# they must not hide a more specific code further out, and they end as ProviderFailureError.
_ERROR_BY_CODE: dict[int, _ByMeaning] = {
    WBEM_E_ACCESS_DENIED: AccessDeniedError,
    ERROR_ACCESS_DENIED: AccessDeniedError,
    E_ACCESSDENIED: AccessDeniedError,
    WBEM_E_NOT_FOUND: NotFoundError,
    WSMAN_DESTINATION_UNREACHABLE: NotFoundError,
    WBEM_E_TYPE_MISMATCH: InvalidRequestError,
    WBEM_E_INVALID_PARAMETER: InvalidRequestError,
    WBEM_E_NOT_SUPPORTED: InvalidRequestError,
    WBEM_E_INVALID_CLASS: InvalidRequestError,
    WBEM_E_INVALID_OPERATION: InvalidRequestError,
    WBEM_E_INVALID_QUERY: InvalidRequestError,
    WBEM_E_INVALID_QUERY_TYPE: InvalidRequestError,
    WSMAN_INVALID_HEADER: InvalidRequestError,
    WSMAN_CANNOT_PROCESS_FILTER: InvalidRequestError,
    WSMAN_SCHEMA_VALIDATION: InvalidRequestError,
    WSMAN_INVALID_SELECTORS: InvalidRequestError,
    WSMAN_URI_WITHOUT_KEYS: InvalidRequestError,
    # The site's namespace does not exist on that host: the provider mapping is wrong.
    WBEM_E_INVALID_NAMESPACE: ConfigError,
    WSMAN_TIMED_OUT: OperationTimeoutError,
    WSMAN_QUOTA_MAX_SHELLS_USER: QuotaError,
    WSMAN_QUOTA_MAX_OPERATIONS_USER: QuotaError,
    WBEM_E_QUOTA_VIOLATION: QuotaError,
}

# By the local part of s:Subcode/s:Value (or s:Code/s:Value): prefixes vary, the local names
# of WS-Addressing, WS-Management and WS-Enumeration faults do not collide.
_ERROR_BY_SUBCODE: dict[str, _ByMeaning] = {
    "AccessDenied": AccessDeniedError,
    "DestinationUnreachable": NotFoundError,
    "ActionNotSupported": InvalidRequestError,
    "InvalidSelectors": InvalidRequestError,
    "SchemaValidationError": InvalidRequestError,
    "CannotProcessFilter": InvalidRequestError,
    "FilterDialectRequestedUnavailable": InvalidRequestError,
    "InvalidMessageInformationHeader": InvalidRequestError,
    "MessageInformationHeaderRequired": InvalidRequestError,
    "EncodingLimit": InvalidRequestError,
    "UnsupportedFeature": InvalidRequestError,
    "InvalidOptions": InvalidRequestError,
    "InvalidRepresentation": InvalidRequestError,
    "MustUnderstand": InvalidRequestError,
    "VersionMismatch": InvalidRequestError,
    "DataEncodingUnknown": InvalidRequestError,
    "TimedOut": OperationTimeoutError,
    "QuotaLimit": QuotaError,
}


@dataclass(frozen=True)
class ProviderFault:
    """`f:ProviderFault`: which plug-in failed and its own WSManFault."""

    provider: str | None = None
    path: str | None = None
    wsman_code: int | None = None
    machine: str | None = None
    message: str | None = None
    # Some plug-ins put plain text in the ProviderFault instead of an inner WSManFault.
    text: str | None = None


@dataclass(frozen=True)
class FaultInfo:
    """Everything a WS-Man fault says, parsed; `code`/`subcode` keep the reply's own QName text."""

    code: str | None = None
    subcode: str | None = None
    reason: str | None = None
    wsman_code: int | None = None
    machine: str | None = None
    message: str | None = None
    provider_fault: ProviderFault | None = None
    wmi_error_code: int | None = None
    extended_status: ExtendedStatus | None = None
    fault_detail: str | None = None
    wmi_error: dict[str, str | None] = field(default_factory=dict)

    @property
    def subcode_name(self) -> str | None:
        """The local part of the subcode (`w:TimedOut` -> `TimedOut`)."""
        return _local_qname(self.subcode)

    @property
    def code_name(self) -> str | None:
        """The local part of the code (`s:Receiver` -> `Receiver`)."""
        return _local_qname(self.code)

    @property
    def text(self) -> str:
        """The most specific human text the fault carries."""
        provider = self.provider_fault
        candidates = (
            provider.message if provider else None,
            self.message,
            self.reason,
            provider.text if provider else None,
            self.wmi_error.get("Message"),
        )
        return next((text for text in candidates if text), "no fault text")

    def codes(self) -> list[int]:
        """The numeric codes, most specific first, without repeats."""
        ordered = (
            self.wmi_error_code,
            self.provider_fault.wsman_code if self.provider_fault else None,
            self.wsman_code,
        )
        return list(dict.fromkeys(code for code in ordered if code is not None))


def is_wmi_hresult(code: int | None) -> bool:
    """True for a WMI HRESULT (facility ITF, 0x8004xxxx)."""
    return code is not None and _WMI_HRESULT_MIN <= code <= _WMI_HRESULT_MAX


def parse_fault(xml: bytes | str) -> FaultInfo | None:
    """The fault in a reply, None when its Body holds no Fault; ProtocolError if not XML/SOAP."""
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


def fault_to_error(info: FaultInfo, http_status: int | None = None) -> RefreshError:
    """The worker error a fault means (see the module docstring for the order of evidence)."""
    error_class = _classify(info)
    provider = info.provider_fault
    return error_class(
        _message(info),
        code=next(iter(info.codes()), None),
        wsman_code=info.wsman_code if info.wsman_code is not None else (provider.wsman_code if provider else None),
        wmi_code=info.wmi_error_code,
        extended_status=info.extended_status,
        http_status=http_status,
    )


def _classify(info: FaultInfo) -> _ByMeaning:
    for code in info.codes():
        if code in _ERROR_BY_CODE:
            return _ERROR_BY_CODE[code]
    for name in (info.subcode_name, info.code_name):
        if name is not None and name in _ERROR_BY_SUBCODE:
            return _ERROR_BY_SUBCODE[name]
    return ProviderFailureError


def _message(info: FaultInfo) -> str:
    facts = [info.subcode or info.code or "SOAP fault"]
    facts.extend(f"0x{code:08X}" for code in info.codes())
    text = _shorten(info.text)
    status = info.extended_status
    if status is not None and status.description:
        text = f"{text} ({status.class_name}: {_shorten(status.description)})"
    return f"WS-Man fault [{', '.join(facts)}]: {text}"


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
    element = next((el for el in detail.iter() if _local(el.tag) == "MSFT_WmiError"), None)
    if element is None:
        return {}
    return {_local(child.tag): _value(child) for child in element}


def _extended_status(detail: ET.Element) -> ExtendedStatus | None:
    element = _extended_status_element(detail)
    if element is None:
        return None
    known: dict[str, str | None] = {}
    extra: dict[str, str] = {}
    for child in element:
        name = _local(child.tag)
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
        class_name=_local(element.tag),
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
    return next((el for el in detail.iter() if _local(el.tag) in _EXTENDED_STATUS_CLASSES), None)


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


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_TEXT_CHARS else flat[: _MAX_TEXT_CHARS - 3] + "..."


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _local_qname(value: str | None) -> str | None:
    if not value:
        return None
    # `w:TimedOut`, `{uri}TimedOut` and `uri:TimedOut` (OMI's spelling) all name TimedOut.
    return value.rsplit("}", 1)[-1].rsplit(":", 1)[-1].strip() or None
