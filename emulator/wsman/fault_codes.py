"""What a WS-Man / WMI fault reports: WSManFault codes, WMI status codes, extended status records.

`ExtendedStatus` renders the `f:ExtendedError` payload: WMI's own `__ExtendedStatus` or the SMS
Provider's `SMS_ExtendedStatus` (built in emulator.sms.error_replies), every property in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from emulator.wsman.namespaces import NS, extended_status_uri
from emulator.wsman.soap import escape

__all__ = [
    "WMI_PROVIDER_NAME",
    "ExtendedStatus",
    "HResult",
    "WsmanCode",
    "wmi_extended_status",
]


class WsmanCode:
    """WSManFault/@Code values (wsmerror.h, ERROR_WSMAN_*)."""

    RESOURCE_NOT_FOUND: Final = 2150858752
    INVALID_ACTIONURI: Final = 2150858753
    PROVIDER_FAILURE: Final = 2150858755
    MESSAGE_INFORMATION_HEADER_REQUIRED: Final = 2150858769
    FILTER_DIALECT_REQUESTED_UNAVAILABLE: Final = 2150858777
    CANNOT_PROCESS_FILTER: Final = 2150858778
    INVALID_ENUMERATION_CONTEXT: Final = 2150858779
    OPERATION_TIMEDOUT: Final = 2150858793
    SCHEMA_VALIDATION_ERROR: Final = 2150858817
    INSUFFICIENT_SELECTORS: Final = 2150858842
    UNEXPECTED_SELECTORS: Final = 2150858843
    WMI_SVC_ACCESS_DENIED: Final = 2150859012
    WMI_PROVIDER_ACCESS_DENIED: Final = 2150859013
    QUOTA_MAX_OPERATIONS: Final = 2150859174


class HResult:
    """WMI status codes (WBEMSTATUS) as the unsigned integers WinRM prints."""

    WBEM_E_FAILED: Final = 0x80041001
    WBEM_E_NOT_FOUND: Final = 0x80041002
    WBEM_E_ACCESS_DENIED: Final = 0x80041003
    WBEM_E_INVALID_CLASS: Final = 0x80041010
    WBEM_E_INVALID_QUERY: Final = 0x80041017
    WBEM_E_INVALID_METHOD: Final = 0x8004102E


# A real SMS_ExtendedStatus (ConfigMgr current branch) names WMI itself as the provider.
WMI_PROVIDER_NAME: Final = "WinMgmt"

PropertyValue = str | int | None


@dataclass(frozen=True, slots=True)
class ExtendedStatus:
    """An `__ExtendedStatus` (or subclass) instance for `f:ExtendedError`; properties in order."""

    class_name: str
    namespace_uri: str
    properties: tuple[tuple[str, PropertyValue], ...]

    def render(self) -> str:
        children = "".join(
            f'<p:{name} xsi:nil="true"/>' if value is None else f"<p:{name}>{escape(str(value))}</p:{name}>"
            for name, value in self.properties
        )
        return (
            f'<p:{self.class_name} xmlns:xsi="{NS.xsi}" xmlns:p="{escape(self.namespace_uri)}" '
            f'xmlns:cim="{NS.cim}" xsi:type="p:{self.class_name}_Type">{children}</p:{self.class_name}>'
        )


def wmi_extended_status(
    site_code: str,
    *,
    operation: str,
    parameter_info: str,
    status_code: int | None = None,
    description: str | None = None,
) -> ExtendedStatus:
    """`__ExtendedStatus` as WMI itself reports (not found, invalid class, invalid query)."""
    return ExtendedStatus(
        class_name="__ExtendedStatus",
        namespace_uri=extended_status_uri(site_code, "__ExtendedStatus"),
        properties=(
            ("Description", description),
            ("Operation", operation),
            ("ParameterInfo", parameter_info),
            ("ProviderName", WMI_PROVIDER_NAME),
            ("StatusCode", status_code),
        ),
    )
