"""The WS-Management layer: requests and replies as WinRM and its WMI plugin put them on the wire.

No SMS semantics and no HTTP: emulator.sms answers with these, emulator.listener carries them.

* namespaces: XML namespaces, action URIs, WMI resource URIs.
* soap: a request parsed into a `WsmanRequest`; reply envelopes (Get, Invoke, Enumerate, Pull, Release).
* soap_faults: the SOAP fault replies WinRM sends (subcode, reason, WSManFault detail).
* fault_codes: what a fault carries: WSManFault codes, WMI HRESULTs, `__ExtendedStatus` records.
* operations: the operations by name, their WMI names, the reply type and `Reject`.
"""

from emulator.wsman import soap, soap_faults
from emulator.wsman.fault_codes import WMI_PROVIDER_NAME, ExtendedStatus, HResult, wmi_extended_status
from emulator.wsman.namespaces import (
    ACTION_ENUMERATE,
    ACTION_GET,
    ACTION_PULL,
    ACTION_PUT,
    ACTION_RELEASE,
    NS,
    WQL_DIALECT,
    class_resource_uri,
    extended_status_uri,
    parse_resource_uri,
    sms_namespace_path,
)
from emulator.wsman.operations import OPERATION_BY_ACTION, WMI_OPERATION, Operation, Reject, WsmanReply
from emulator.wsman.soap import (
    SoapError,
    WsmanRequest,
    escape,
    operation_timeout_s,
    render_get_response,
    render_invoke_response,
)
from emulator.wsman.soap_faults import (
    access_denied,
    cannot_process_filter,
    generic_failure,
    method_not_found,
    resource_not_found,
)

__all__ = [
    "ACTION_ENUMERATE",
    "ACTION_GET",
    "ACTION_PULL",
    "ACTION_PUT",
    "ACTION_RELEASE",
    "NS",
    "OPERATION_BY_ACTION",
    "WMI_OPERATION",
    "WMI_PROVIDER_NAME",
    "WQL_DIALECT",
    "ExtendedStatus",
    "HResult",
    "Operation",
    "Reject",
    "SoapError",
    "WsmanReply",
    "WsmanRequest",
    "access_denied",
    "cannot_process_filter",
    "class_resource_uri",
    "escape",
    "extended_status_uri",
    "generic_failure",
    "method_not_found",
    "operation_timeout_s",
    "parse_resource_uri",
    "render_get_response",
    "render_invoke_response",
    "resource_not_found",
    "sms_namespace_path",
    "soap",
    "soap_faults",
    "wmi_extended_status",
]
