"""The pure WS-Man layer: build request envelopes, parse replies and faults, validate inputs.

No sockets, no pywinrm objects and nothing from the rest of the worker: it speaks WS-Management
only. Replies are parsed by one bounded, DTD-refusing parser (`soap_parser`); faults come out as
`FaultInfo` values inside `FaultReply`, bad replies as `MalformedReply`, values no envelope can
carry as `EnvelopeValueError`. What any of them means to the worker is `worker.provider.classify`'s call.
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
    build_put,
    build_release,
    new_message_id,
)
from worker.wsman.exceptions import EnvelopeValueError, FaultReply, MalformedReply, WsmanError
from worker.wsman.faultinfo import ExtendedStatus, FaultInfo, ProviderFault
from worker.wsman.faults import is_wmi_hresult, parse_fault
from worker.wsman.namespaces import ACTION_PUT_RESPONSE
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
from worker.wsman.soap_parser import MAX_DEPTH, MAX_ELEMENTS, MAX_REPLY_BYTES, parse_envelope

__all__ = [
    "ACTION_PUT_RESPONSE",
    "DEFAULT_LOCALE",
    "DEFAULT_MAX_ENVELOPE_SIZE_BYTES",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_REPLY_BYTES",
    "REFRESH_METHOD",
    "EnumerationPage",
    "Envelope",
    "EnvelopeValueError",
    "ExtendedStatus",
    "FaultInfo",
    "FaultReply",
    "MalformedReply",
    "MethodOutput",
    "ProviderFault",
    "ReplyHeader",
    "WmiInstance",
    "WsmanError",
    "build_enumerate",
    "build_get",
    "build_invoke",
    "build_pull",
    "build_put",
    "build_release",
    "check_action",
    "check_relates_to",
    "enumeration_uri",
    "is_wmi_hresult",
    "new_message_id",
    "parse_enumeration",
    "parse_envelope",
    "parse_fault",
    "parse_header",
    "parse_instance",
    "parse_method_output",
    "resource_uri",
]
