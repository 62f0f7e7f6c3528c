"""XML namespaces, action URIs and fixed URIs of WS-Management as Windows speaks it.

[MS-WSMV] 2.2.1 lists the namespaces; DSP0226 (WS-Management), WS-Transfer and
WS-Enumeration define the actions. Replies are matched by namespace URI, never by prefix:
Windows, OMI and our emulator all choose their own prefixes.
"""

from __future__ import annotations

__all__ = [
    "ACTION_ENUMERATE",
    "ACTION_ENUMERATE_RESPONSE",
    "ACTION_FAULT_ADDRESSING",
    "ACTION_FAULT_ENUMERATION",
    "ACTION_FAULT_WSMAN",
    "ACTION_GET",
    "ACTION_GET_RESPONSE",
    "ACTION_PULL",
    "ACTION_PULL_RESPONSE",
    "ACTION_PUT",
    "ACTION_PUT_RESPONSE",
    "ACTION_RELEASE",
    "ACTION_RELEASE_RESPONSE",
    "ADDRESS_ANONYMOUS",
    "DIALECT_WQL",
    "NS_ADDRESSING",
    "NS_CIM",
    "NS_ENUMERATION",
    "NS_MSFT_WMIERROR",
    "NS_SOAP",
    "NS_TRANSFER",
    "NS_WSMAN",
    "NS_WSMANFAULT",
    "NS_WSMV",
    "NS_XML",
    "NS_XSI",
    "WMI_RESOURCE_URI_BASE",
    "invoke_action",
    "qname",
]

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
# Microsoft's extensions ([MS-WSMV] 2.2.1): DataLocale, SessionId, ActivityId.
NS_WSMV = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_WSMANFAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_MSFT_WMIERROR = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError"
NS_CIM = "http://schemas.dmtf.org/wbem/wscim/1/common"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_XML = "http://www.w3.org/XML/1998/namespace"

ADDRESS_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
DIALECT_WQL = "http://schemas.microsoft.com/wbem/wsman/1/WQL"
# The WinRM WMI plug-in serves every WMI namespace below this URI ([MS-WSMV] 3.1.4.1.30).
WMI_RESOURCE_URI_BASE = "http://schemas.microsoft.com/wbem/wsman/1/wmi"

ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_GET_RESPONSE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse"
ACTION_PUT = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Put"
ACTION_PUT_RESPONSE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/PutResponse"
ACTION_ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
ACTION_ENUMERATE_RESPONSE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse"
ACTION_PULL = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
ACTION_PULL_RESPONSE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse"
ACTION_RELEASE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Release"
ACTION_RELEASE_RESPONSE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/ReleaseResponse"
ACTION_FAULT_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
ACTION_FAULT_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ACTION_FAULT_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/fault"


def invoke_action(resource_uri: str, method: str) -> str:
    """The custom action of a WMI method call: `<ResourceURI>/<Method>` ([MS-WSMV] 3.1.4.1.30)."""
    return f"{resource_uri}/{method}"


def qname(namespace: str, local_name: str) -> str:
    """ElementTree's `{namespace}local` spelling of a qualified name."""
    return f"{{{namespace}}}{local_name}"
