"""SOAP faults shaped like the ones WinRM and its WMI plugin (WsmWmiPl.dll) send (the SMS
Provider's own situations built on them: emulator.sms.error_replies).

Shapes follow real captures kept in tests/fixtures/windows/ (see its README for provenance):

* a plain WS-Management fault: `s:Detail/f:WSManFault[@Code,@Machine]/f:Message` (TimedOut,
  SchemaValidationError, InvalidSelectors);
* a WMI provider fault: the outer `f:WSManFault` whose `f:Message` holds
  `f:ProviderFault provider="WMI Provider"` with an inner `f:WSManFault` and an
  `f:ExtendedError` carrying `p:__ExtendedStatus` or, from the SMS Provider, `p:SMS_ExtendedStatus`
  (DestinationUnreachable, CannotProcessFilter, AccessDenied, generic failure);
* a quota fault carrying only `p:MSFT_WmiError` with `error_Code` (WinRM 3.0 and later).

Where no capture exists (access denied from WMI, generic failure, unknown method, invalid
enumeration context, unknown action) the shape is the nearest captured one with the documented
codes ([MS-WSMV] 2.2.4.x, wsmerror.h); those are marked "no capture" below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from emulator.wsman.fault_codes import ExtendedStatus, HResult, WsmanCode
from emulator.wsman.namespaces import (
    ACTION_ADDRESSING_FAULT,
    ACTION_ENUMERATION_FAULT,
    ACTION_WSMAN_FAULT,
    NS,
)
from emulator.wsman.soap import envelope, escape

__all__ = [
    "access_denied",
    "action_not_supported",
    "cannot_process_filter",
    "filter_dialect_unavailable",
    "generic_failure",
    "internal_error",
    "invalid_enumeration_context",
    "invalid_selectors",
    "message_header_required",
    "method_not_found",
    "quota_exceeded",
    "resource_not_found",
    "schema_validation",
    "timed_out",
]


_PLUGIN: Final = 'provider="WMI Provider" path="%systemroot%\\system32\\WsmWmiPl.dll"'
_FAULT_DETAIL: Final = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/"


# --------------------------------------------------------------------------- building blocks


def _fault(action: str, relates_to: str | None, *, code: str, subcode: str, reason: str, detail: str) -> bytes:
    body = (
        f"<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode>"
        f'</s:Code><s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text></s:Reason>'
        f"<s:Detail>{detail}</s:Detail></s:Fault>"
    )
    return envelope(action, relates_to, body)


def _wsman_fault(code: int, machine: str, message_xml: str) -> str:
    return (
        f'<f:WSManFault xmlns:f="{NS.f}" Code="{code}" Machine="{escape(machine)}">'
        f"<f:Message>{message_xml}</f:Message></f:WSManFault>"
    )


def _provider_fault(code: int, inner_code: int, machine: str, message: str, extended: ExtendedStatus | None) -> str:
    """WSManFault > Message > ProviderFault(WMI Provider) > [inner WSManFault, ExtendedError]."""
    inner = _wsman_fault(inner_code, machine, escape(message))
    extended_xml = "" if extended is None else f"<f:ExtendedError>{extended.render()}</f:ExtendedError>"
    return _wsman_fault(code, machine, f"<f:ProviderFault {_PLUGIN}>{inner}{extended_xml}</f:ProviderFault>")


def _fault_detail(name: str) -> str:
    return f"<w:FaultDetail>{_FAULT_DETAIL}{name}</w:FaultDetail>"


def _msft_wmi_error(*, cim_status: int, message: str, hresult: int, category: int, windows_message: str) -> str:
    """`p:MSFT_WmiError` as WinRM 3.0+ sends it (pywinrm reads `error_Code` as wmierror_code)."""
    xsi_type = f'xmlns:xsi="{NS.xsi}" xsi:type="p:MSFT_WmiError_Type"'
    properties: Sequence[tuple[str, str, str | int | None]] = (
        ("CIMStatusCode", "cimUnsignedInt", cim_status),
        ("CIMStatusCodeDescription", "cimString", None),
        ("ErrorSource", "cimString", None),
        ("ErrorSourceFormat", "cimUnsignedShort", 0),
        ("ErrorType", "cimUnsignedShort", 0),
        ("Message", "cimString", message),
        ("MessageID", "cimString", f"HRESULT 0x{hresult:08x}"),
        ("OtherErrorSourceFormat", "cimString", None),
        ("OtherErrorType", "cimString", None),
        ("OwningEntity", "cimString", None),
        ("PerceivedSeverity", "cimUnsignedShort", 0),
        ("ProbableCause", "cimUnsignedShort", 0),
        ("ProbableCauseDescription", "cimString", None),
        ("error_Category", "cimUnsignedInt", category),
        ("error_Code", "cimUnsignedInt", hresult),
        ("error_Type", "cimString", "HRESULT"),
        ("error_WindowsErrorMessage", "cimString", windows_message),
    )
    children = "".join(
        f'<p:{name} xsi:nil="true" xsi:type="cim:{cim_type}"/>'
        if value is None
        else f'<p:{name} xsi:type="cim:{cim_type}">{escape(str(value))}</p:{name}>'
        for name, cim_type, value in properties
    )
    return (
        f'<p:MSFT_WmiError b:IsCIM_Error="true" xmlns:b="{NS.b}" xmlns:cim="{NS.cim}" '
        f'xmlns:p="{NS.wmierror}" {xsi_type}>{children}</p:MSFT_WmiError>'
    )


# --------------------------------------------------------------------------- fault kinds

_NOT_FOUND_REASON: Final = (
    "The WS-Management service cannot process the request. The service cannot find the resource "
    "identified by the resource URI and selectors. "
)


def resource_not_found(
    *, relates_to: str | None, machine: str, message: str = _NOT_FOUND_REASON, extended: ExtendedStatus | None = None
) -> bytes:
    """No such instance / class / namespace (WBEM_E_NOT_FOUND, WBEM_E_INVALID_CLASS on Get)."""
    detail = _fault_detail("InvalidResourceURI") + _provider_fault(
        WsmanCode.RESOURCE_NOT_FOUND, WsmanCode.RESOURCE_NOT_FOUND, machine, message, extended
    )
    return _fault(
        ACTION_ADDRESSING_FAULT,
        relates_to,
        code="s:Sender",
        subcode="a:DestinationUnreachable",
        reason=_NOT_FOUND_REASON,
        detail=detail,
    )


_FILTER_REASON: Final = (
    "The data source could not process the filter. The filter might be missing or it might be invalid. "
    "Change the filter and try the request again.  "
)


def cannot_process_filter(
    *, relates_to: str | None, machine: str, message: str, extended: ExtendedStatus | None
) -> bytes:
    """WQL the WMI service rejects: invalid query (0x80041017) or class (0x80041010).

    Windows uses the WS-Enumeration subcode `n:CannotProcessFilter` (not `w:`), as captured.
    """
    detail = _provider_fault(
        WsmanCode.CANNOT_PROCESS_FILTER, WsmanCode.CANNOT_PROCESS_FILTER, machine, message, extended
    )
    return _fault(
        ACTION_ENUMERATION_FAULT,
        relates_to,
        code="s:Sender",
        subcode="n:CannotProcessFilter",
        reason=_FILTER_REASON,
        detail=detail,
    )


def filter_dialect_unavailable(*, relates_to: str | None, machine: str, dialect: str) -> bytes:
    """A filter dialect other than WQL (no capture)."""
    message = f"The requested filter dialect is not supported: {dialect}. "
    detail = _wsman_fault(WsmanCode.FILTER_DIALECT_REQUESTED_UNAVAILABLE, machine, escape(message))
    reason = "The requested filtering dialect is not supported. "
    return _fault(
        ACTION_ENUMERATION_FAULT,
        relates_to,
        code="s:Sender",
        subcode="n:FilterDialectRequestedUnavailable",
        reason=reason,
        detail=detail,
    )


def invalid_selectors(
    *, relates_to: str | None, machine: str, detail_name: Literal["UnexpectedSelectors", "InsufficientSelectors"]
) -> bytes:
    """Selectors that do not name the class's key (PackageID); the plugin reports it, as captured."""
    code = WsmanCode.UNEXPECTED_SELECTORS if detail_name == "UnexpectedSelectors" else WsmanCode.INSUFFICIENT_SELECTORS
    reason = (
        "The WS-Management service cannot process the request because the request contained invalid "
        "selectors for the resource. "
    )
    detail = _fault_detail(detail_name) + _provider_fault(code, code, machine, reason, None)
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Sender", subcode="w:InvalidSelectors", reason=reason, detail=detail
    )


def access_denied(
    *,
    relates_to: str | None,
    machine: str,
    scope: Literal["service", "provider"],
    extended: ExtendedStatus | None = None,
) -> bytes:
    """WBEM_E_ACCESS_DENIED: no rights on the namespace ("service") or RBAC on the object (no capture).

    WinRM reports these as ERROR_WSMAN_WMI_SVC_ACCESS_DENIED (0x80338104) and
    ERROR_WSMAN_WMI_PROVIDER_ACCESS_DENIED (0x80338105) with the w:AccessDenied subcode.
    """
    if scope == "service":
        code = WsmanCode.WMI_SVC_ACCESS_DENIED
        message = (
            "The WS-Management service cannot process the request. The WMI service returned an 'access denied' error. "
        )
    else:
        code = WsmanCode.WMI_PROVIDER_ACCESS_DENIED
        message = (
            "The WS-Management service cannot process the request. The WMI provider returned an 'access denied' error. "
        )
    detail = _provider_fault(code, code, machine, message, extended)
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Sender", subcode="w:AccessDenied", reason=message, detail=detail
    )


def _unknown_wmi_error(hresult: int) -> str:
    return f"The WMI service or the WMI provider returned an unknown error: HRESULT 0x{hresult:08x} "


def generic_failure(*, relates_to: str | None, machine: str, extended: ExtendedStatus) -> bytes:
    """WBEM_E_FAILED from the SMS Provider, with its SMS_ExtendedStatus (no capture).

    The `p:MSFT_WmiError` sibling carries error_Code 2147749889, as the design notes record
    for real servers, so pywinrm exposes it as `wmierror_code`.
    """
    message = _unknown_wmi_error(HResult.WBEM_E_FAILED)
    detail = _provider_fault(HResult.WBEM_E_FAILED, HResult.WBEM_E_FAILED, machine, message, extended)
    detail += _msft_wmi_error(
        cim_status=1, message="Generic failure ", hresult=HResult.WBEM_E_FAILED, category=0, windows_message=message
    )
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Receiver", subcode="w:InternalError", reason=message, detail=detail
    )


def method_not_found(*, relates_to: str | None, machine: str, extended: ExtendedStatus) -> bytes:
    """A custom action naming a method the class does not have: WBEM_E_INVALID_METHOD (no capture)."""
    message = _unknown_wmi_error(HResult.WBEM_E_INVALID_METHOD)
    detail = _provider_fault(HResult.WBEM_E_INVALID_METHOD, HResult.WBEM_E_INVALID_METHOD, machine, message, extended)
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Receiver", subcode="w:InternalError", reason=message, detail=detail
    )


_TIMEOUT_REASON: Final = (
    "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
)


def timed_out(*, relates_to: str | None, machine: str) -> bytes:
    """w:TimedOut (pywinrm raises WinRMOperationTimeoutError for its code)."""
    detail = _wsman_fault(WsmanCode.OPERATION_TIMEDOUT, machine, escape(_TIMEOUT_REASON))
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Receiver", subcode="w:TimedOut", reason=_TIMEOUT_REASON, detail=detail
    )


def quota_exceeded(*, relates_to: str | None, machine: str, limit: int) -> bytes:
    """Too many concurrent operations for the user (ERROR_WSMAN_QUOTA_MAX_OPERATIONS)."""
    reason = (
        "The WS-Management service cannot process the request. The maximum number of concurrent operations "
        "for this user has been exceeded. Close existing operations for this user, or raise the quota for "
        "this user. "
    )
    message = (
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of "
        f"{limit} concurrent operations, which has been exceeded. Close existing operations for this user, "
        "or raise the quota for this user. "
    )
    detail = _msft_wmi_error(
        cim_status=27, message=message, hresult=WsmanCode.QUOTA_MAX_OPERATIONS, category=30, windows_message=message
    )
    return _fault(ACTION_WSMAN_FAULT, relates_to, code="s:Sender", subcode="w:QuotaLimit", reason=reason, detail=detail)


def schema_validation(*, relates_to: str | None, machine: str, message: str) -> bytes:
    """A request that is not a valid WS-Management envelope."""
    reason = (
        "The SOAP XML in the message does not match the corresponding XML schema definition. Change the XML and retry. "
    )
    detail = _wsman_fault(WsmanCode.SCHEMA_VALIDATION_ERROR, machine, escape(message))
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Sender", subcode="w:SchemaValidationError", reason=reason, detail=detail
    )


def message_header_required(*, relates_to: str | None, machine: str, header: str) -> bytes:
    """A required WS-Addressing header (MessageID, Action) is missing (no capture)."""
    message = f"The WS-Management service cannot process the request. The {header} header is missing. "
    detail = _wsman_fault(WsmanCode.MESSAGE_INFORMATION_HEADER_REQUIRED, machine, escape(message))
    reason = "A required header representing a Message Addressing Property is not present. "
    return _fault(
        ACTION_ADDRESSING_FAULT,
        relates_to,
        code="s:Sender",
        subcode="a:MessageInformationHeaderRequired",
        reason=reason,
        detail=detail,
    )


def action_not_supported(*, relates_to: str | None, machine: str, action: str) -> bytes:
    """An Action URI the service does not implement (no capture)."""
    message = f"The WS-Management service cannot process the request. The action is not supported: {action} "
    detail = _wsman_fault(WsmanCode.INVALID_ACTIONURI, machine, escape(message))
    reason = "The action is not supported by the service. "
    return _fault(
        ACTION_ADDRESSING_FAULT,
        relates_to,
        code="s:Sender",
        subcode="a:ActionNotSupported",
        reason=reason,
        detail=detail,
    )


def invalid_enumeration_context(*, relates_to: str | None, machine: str) -> bytes:
    """A Pull/Release with an unknown, finished or expired context (no capture)."""
    reason = "The enumeration context supplied in the message is not valid. "
    message = (
        "The WS-Management service cannot process the request because the enumeration context supplied "
        "in the message is not valid. "
    )
    detail = _wsman_fault(WsmanCode.INVALID_ENUMERATION_CONTEXT, machine, escape(message))
    return _fault(
        ACTION_ENUMERATION_FAULT,
        relates_to,
        code="s:Receiver",
        subcode="n:InvalidEnumerationContext",
        reason=reason,
        detail=detail,
    )


def internal_error(*, relates_to: str | None, machine: str) -> bytes:
    """The emulator itself failed (a bug): what WinRM answers when a plugin fails."""
    message = "The WS-Management service cannot process the request. The WMI provider failed. "
    detail = _wsman_fault(WsmanCode.PROVIDER_FAILURE, machine, escape(message))
    return _fault(
        ACTION_WSMAN_FAULT, relates_to, code="s:Receiver", subcode="w:InternalError", reason=message, detail=detail
    )
