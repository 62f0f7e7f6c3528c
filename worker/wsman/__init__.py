"""The pure WS-Man layer: build request envelopes, parse replies and faults, validate inputs.

No sockets and no pywinrm objects here: the transport sends `Envelope.xml` with
`Protocol.send_message` and hands the reply bytes (or the exception) back to these functions.
"""

from worker.wsman.envelopes import (
    DEFAULT_LOCALE,
    DEFAULT_MAX_ENVELOPE_SIZE_BYTES,
    REFRESH_METHOD,
    Envelope,
    build_enumerate,
    build_get,
    build_invoke,
    build_pull,
    build_release,
    new_message_id,
)
from worker.wsman.faults import FaultInfo, ProviderFault, fault_to_error, is_wmi_hresult, parse_fault
from worker.wsman.replies import (
    EnumerationPage,
    MethodOutput,
    ReplyHeader,
    WmiInstance,
    check_action,
    check_relates_to,
    parse_enumeration,
    parse_header,
    parse_instance,
    parse_method_output,
)
from worker.wsman.selectors import enumeration_uri, resource_uri

__all__ = [
    "DEFAULT_LOCALE",
    "DEFAULT_MAX_ENVELOPE_SIZE_BYTES",
    "REFRESH_METHOD",
    "EnumerationPage",
    "Envelope",
    "FaultInfo",
    "MethodOutput",
    "ProviderFault",
    "ReplyHeader",
    "WmiInstance",
    "build_enumerate",
    "build_get",
    "build_invoke",
    "build_pull",
    "build_release",
    "check_action",
    "check_relates_to",
    "enumeration_uri",
    "fault_to_error",
    "is_wmi_hresult",
    "new_message_id",
    "parse_enumeration",
    "parse_fault",
    "parse_header",
    "parse_instance",
    "parse_method_output",
    "resource_uri",
]
