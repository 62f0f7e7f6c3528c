"""XML namespaces, action URIs and resource URIs the emulator speaks ([MS-WSMV] 2.2.x, DSP0226).

Prefixes are the ones Windows puts on the wire (s, a, w, n, x, p, f, cim, xsi) so replies look
like WinRM's and captures diff cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACTION_ADDRESSING_FAULT",
    "ACTION_ENUMERATE",
    "ACTION_ENUMERATE_RESPONSE",
    "ACTION_ENUMERATION_FAULT",
    "ACTION_GET",
    "ACTION_GET_RESPONSE",
    "ACTION_PULL",
    "ACTION_PULL_RESPONSE",
    "ACTION_PUT",
    "ACTION_PUT_RESPONSE",
    "ACTION_RELEASE",
    "ACTION_RELEASE_RESPONSE",
    "ACTION_WSMAN_FAULT",
    "ANONYMOUS",
    "NS",
    "WMI_RESOURCE_PREFIX",
    "WQL_DIALECT",
    "ResourceUri",
    "class_resource_uri",
    "extended_status_uri",
    "parse_resource_uri",
    "sms_namespace_path",
]

NS_SOAP: Final = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_TRANSFER: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_ENUMERATION: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_EVENTING: Final = "http://schemas.xmlsoap.org/ws/2004/08/eventing"
NS_WSMAN: Final = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_MS_WSMAN: Final = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_WSMAN_FAULT: Final = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_CIM_BINDING: Final = "http://schemas.dmtf.org/wbem/wsman/1/cimbinding.xsd"
NS_CIM_COMMON: Final = "http://schemas.dmtf.org/wbem/wscim/1/common"
NS_XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
NS_XML: Final = "http://www.w3.org/XML/1998/namespace"
NS_MSFT_WMI_ERROR: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError"


class NS:
    """Namespace URIs by the prefix Windows uses for them."""

    s: Final = NS_SOAP
    a: Final = NS_ADDRESSING
    x: Final = NS_TRANSFER
    n: Final = NS_ENUMERATION
    e: Final = NS_EVENTING
    w: Final = NS_WSMAN
    p: Final = NS_MS_WSMAN
    f: Final = NS_WSMAN_FAULT
    b: Final = NS_CIM_BINDING
    cim: Final = NS_CIM_COMMON
    xsi: Final = NS_XSI
    xml: Final = NS_XML
    wmierror: Final = NS_MSFT_WMI_ERROR


ANONYMOUS: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

ACTION_GET: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_GET_RESPONSE: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse"
ACTION_PUT: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Put"
ACTION_PUT_RESPONSE: Final = "http://schemas.xmlsoap.org/ws/2004/09/transfer/PutResponse"
ACTION_ENUMERATE: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
ACTION_ENUMERATE_RESPONSE: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse"
ACTION_PULL: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
ACTION_PULL_RESPONSE: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse"
ACTION_RELEASE: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Release"
ACTION_RELEASE_RESPONSE: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/ReleaseResponse"
# Fault actions: Windows picks the one of the spec that defines the subcode.
ACTION_WSMAN_FAULT: Final = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ACTION_ADDRESSING_FAULT: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"
ACTION_ENUMERATION_FAULT: Final = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/fault"

WQL_DIALECT: Final = "http://schemas.microsoft.com/wbem/wsman/1/WQL"

# [MS-WSMV] 3.1.4.1.31: the WMI plugin maps <prefix><namespace path>/<class> to a WMI class.
WMI_RESOURCE_PREFIX: Final = "http://schemas.microsoft.com/wbem/wsman/1/wmi/"
_WMI_RESOURCE_PREFIX_LOWER: Final = WMI_RESOURCE_PREFIX.lower()
ENUMERATE_ALL_CLASS: Final = "*"


@dataclass(frozen=True, slots=True)
class ResourceUri:
    """A WMI resource URI split into WMI namespace path (`root/sms/site_PS1`) and class (or `*`)."""

    namespace_path: str
    class_name: str


def parse_resource_uri(uri: str) -> ResourceUri | None:
    """Split a WMI plugin resource URI; None when it is not one (no prefix, no class part)."""
    if not uri.lower().startswith(_WMI_RESOURCE_PREFIX_LOWER):
        return None
    rest = uri[len(WMI_RESOURCE_PREFIX) :].strip("/")
    namespace_path, sep, class_name = rest.rpartition("/")
    if not sep or not namespace_path or not class_name:
        return None
    return ResourceUri(namespace_path=namespace_path, class_name=class_name)


def sms_namespace_path(site_code: str) -> str:
    """The SMS Provider's WMI namespace as it appears in a resource URI."""
    return f"root/sms/site_{site_code}"


def class_resource_uri(site_code: str, class_name: str) -> str:
    """The canonical resource URI of a class in the site's namespace."""
    return f"{WMI_RESOURCE_PREFIX}{sms_namespace_path(site_code)}/{class_name}"


def extended_status_uri(site_code: str, class_name: str) -> str:
    """Namespace of an `f:ExtendedError` instance (WinRM uses the class's resource URI)."""
    return class_resource_uri(site_code, class_name)
