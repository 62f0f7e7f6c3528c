"""The SMS Provider's own error replies: which WMI status, which extended status, which wording.

Built on the SOAP fault replies of emulator.wsman.soap_faults, with the extended status records
of emulator.wsman.fault_codes and the SMS Provider's `SMS_ExtendedStatus` (built here).
"""

from __future__ import annotations

from typing import Final

from emulator.wsman import (
    WMI_PROVIDER_NAME,
    ExtendedStatus,
    HResult,
    access_denied,
    cannot_process_filter,
    extended_status_uri,
    generic_failure,
    method_not_found,
    resource_not_found,
    wmi_extended_status,
)

__all__ = [
    "instance_not_found",
    "invalid_class",
    "invalid_query",
    "medium_not_ready",
    "rbac_access_denied",
    "site_database_failure",
    "sms_extended_status",
    "unknown_method",
]


_CLASS_MISSING: Final = "The specified class does not exist in the given namespace. "
_SMS_PROVIDER_FILE: Final = "D:\\dbs\\sh\\cmgm\\src\\SiteServer\\SDK_Provider\\SMSProv\\sspackage.cpp"


def sms_extended_status(
    site_code: str,
    *,
    description: str,
    error_code: int,
    operation: str,
    parameter_info: str,
    status_code: int,
    line: int,
    object_info: str | None = None,
) -> ExtendedStatus:
    """`SMS_ExtendedStatus` as the SMS Provider reports (every property of the class)."""
    return ExtendedStatus(
        class_name="SMS_ExtendedStatus",
        namespace_uri=extended_status_uri(site_code, "SMS_ExtendedStatus"),
        properties=(
            ("CauseInfo", None),
            ("Description", description),
            ("ErrorCode", error_code),
            ("File", _SMS_PROVIDER_FILE),
            ("Line", line),
            ("ObjectInfo", object_info),
            ("Operation", operation),
            ("ParameterInfo", parameter_info),
            ("ProviderName", WMI_PROVIDER_NAME),
            ("SQLMessage", None),
            ("SQLSeverity", None),
            ("SQLStatus", None),
            ("StatusCode", status_code),
        ),
    )


def instance_not_found(
    *, site_code: str, relates_to: str | None, machine: str, object_path: str, operation: str
) -> bytes:
    """GetObject / ExecMethod on a key that no instance of the class has."""
    extended = wmi_extended_status(
        site_code, operation=operation, parameter_info=object_path, status_code=HResult.WBEM_E_NOT_FOUND
    )
    return resource_not_found(relates_to=relates_to, machine=machine, extended=extended)


def invalid_class(
    *, site_code: str, relates_to: str | None, machine: str, class_name: str, operation: str, query: str | None
) -> bytes:
    """A class the namespace does not have: in a query CannotProcessFilter, else not found."""
    if operation == "ExecQuery":
        extended = wmi_extended_status(
            site_code,
            operation=operation,
            parameter_info=query or f"select * from {class_name}",  # noqa: S608 - WQL text, not SQL
            status_code=HResult.WBEM_E_INVALID_CLASS,
        )
        return cannot_process_filter(relates_to=relates_to, machine=machine, message=_CLASS_MISSING, extended=extended)
    extended = wmi_extended_status(
        site_code, operation=operation, parameter_info=class_name, status_code=HResult.WBEM_E_INVALID_CLASS
    )
    return resource_not_found(relates_to=relates_to, machine=machine, message=_CLASS_MISSING, extended=extended)


def invalid_query(*, site_code: str, relates_to: str | None, machine: str, message: str, query: str) -> bytes:
    """WQL that does not parse or names an unknown property (WBEM_E_INVALID_QUERY)."""
    extended = wmi_extended_status(
        site_code, operation="ExecQuery", parameter_info=query, status_code=HResult.WBEM_E_INVALID_QUERY
    )
    return cannot_process_filter(relates_to=relates_to, machine=machine, message=message, extended=extended)


def unknown_method(*, site_code: str, relates_to: str | None, machine: str, object_path: str, method: str) -> bytes:
    """ExecMethod of a method the class does not define."""
    extended = wmi_extended_status(
        site_code,
        operation="ExecMethod",
        parameter_info=f"{object_path}::{method}",
        status_code=HResult.WBEM_E_INVALID_METHOD,
    )
    return method_not_found(relates_to=relates_to, machine=machine, extended=extended)


def rbac_access_denied(
    *, site_code: str, relates_to: str | None, machine: str, user: str, object_path: str, operation: str
) -> bytes:
    """The account lacks ConfigMgr RBAC rights on this object (SMS Provider, 0x80041003)."""
    extended = sms_extended_status(
        site_code,
        description=f"User {user} does not have permission to access {object_path}.",
        error_code=0x40480001,
        operation=operation,
        parameter_info=object_path,
        status_code=HResult.WBEM_E_ACCESS_DENIED,
        line=1874,
        object_info="CSspSecurity",
    )
    return access_denied(relates_to=relates_to, machine=machine, scope="provider", extended=extended)


def medium_not_ready(
    *, site_code: str, relates_to: str | None, machine: str, object_path: str, description: str, error_code: int
) -> bytes:
    """RefreshPkgSource of a STORAGE_COMPRESS package whose source medium is not ready."""
    extended = sms_extended_status(
        site_code,
        description=description,
        error_code=error_code,
        operation="ExecMethod",
        parameter_info=object_path,
        status_code=HResult.WBEM_E_FAILED,
        line=2112,
        object_info="CSspPackage::RefreshPkgSource",
    )
    return generic_failure(relates_to=relates_to, machine=machine, extended=extended)


def site_database_failure(
    *, site_code: str, relates_to: str | None, machine: str, operation: str, object_path: str
) -> bytes:
    """The SMS Provider lost its site database: the injected "generic_failure"."""
    extended = sms_extended_status(
        site_code,
        description="Failed to get a connection to the site database. Error: 0x80004005",
        error_code=0x40240001,
        operation=operation,
        parameter_info=object_path,
        status_code=HResult.WBEM_E_FAILED,
        line=731,
        object_info="CSspConnection",
    )
    return generic_failure(relates_to=relates_to, machine=machine, extended=extended)
