"""Validation of everything that reaches a WS-Man selector, a resource URI or a WQL query.

Values come from producers (HTTP API, CLI, other services), so they are checked strictly
here and escaped again where they are rendered (envelopes, WQL): belt and braces. Errors
echo the bad value only as a truncated `repr`, so hostile input cannot forge log lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from worker.errors import InvalidRequestError
from worker.wsman.namespaces import WMI_RESOURCE_URI_BASE

__all__ = [
    "PACKAGE_CLASSES",
    "PACKAGE_ID_PROPERTY",
    "TASK_SEQUENCE_CLASS",
    "enumeration_uri",
    "package_query",
    "resource_uri",
    "safe_repr",
    "validate_package_class",
    "validate_package_id",
    "validate_site_code",
    "wql_string_literal",
]

# Site code: 3 letters or digits (DESIGN.md section 1).
_SITE_CODE_RE = re.compile(r"[A-Za-z0-9]{3}")
# PackageID: the creating site's code + 5 hex digits. The site may be a parent site, so only
# the shape is checked, not that it starts with the provider's own site code.
_PACKAGE_ID_RE = re.compile(r"[A-Za-z0-9]{3}[0-9A-Fa-f]{5}")
_PROPERTY_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# XML 1.0 cannot carry C0 controls other than tab/CR/LF even escaped, and WQL has no use for them.
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")

_SAFE_REPR_MAX_CHARS = 64
_ELLIPSIS = "..."

TASK_SEQUENCE_CLASS = "SMS_TaskSequencePackage"
# Classes that document the instance method RefreshPkgSource (SMS_PackageBaseclass children).
PACKAGE_CLASSES: tuple[str, ...] = (
    "SMS_Package",
    "SMS_DriverPackage",
    "SMS_ImagePackage",
    "SMS_BootImagePackage",
    "SMS_OperatingSystemInstallPackage",
    "SMS_SoftwareUpdatesPackage",
    "SMS_DeviceSettingPackage",
    "SMS_ContentPackage",
    TASK_SEQUENCE_CLASS,
)
_CANONICAL_CLASS = {name.lower(): name for name in PACKAGE_CLASSES}
PACKAGE_ID_PROPERTY = "PackageID"


def safe_repr(value: object) -> str:
    """`repr(value)` cut to 64 characters: safe to put in an error message or a log line."""
    text = repr(value)
    if len(text) <= _SAFE_REPR_MAX_CHARS:
        return text
    return text[: _SAFE_REPR_MAX_CHARS - len(_ELLIPSIS)] + _ELLIPSIS


def validate_site_code(value: object) -> str:
    """A ConfigMgr site code, upper-cased; InvalidRequestError unless 3 letters or digits."""
    if not isinstance(value, str) or not _SITE_CODE_RE.fullmatch(value):
        raise InvalidRequestError(f"invalid site code {safe_repr(value)}: expected 3 letters or digits")
    return value.upper()


def validate_package_id(value: object) -> str:
    """A PackageID, upper-cased; InvalidRequestError unless a site code + 5 hex digits."""
    if not isinstance(value, str) or not _PACKAGE_ID_RE.fullmatch(value):
        raise InvalidRequestError(
            f"invalid PackageID {safe_repr(value)}: expected a 3-character site code and 5 hex digits"
        )
    return value.upper()


def validate_package_class(value: object) -> str:
    """The canonical spelling of an allowed package class (input matched case-insensitively)."""
    canonical = _CANONICAL_CLASS.get(value.lower()) if isinstance(value, str) else None
    if canonical is None:
        raise InvalidRequestError(
            f"invalid package class {safe_repr(value)}: expected one of {', '.join(PACKAGE_CLASSES)}"
        )
    return canonical


def resource_uri(site_code: str, class_name: str) -> str:
    """The WS-Man resource URI of a package class in a site's SMS Provider namespace."""
    site = validate_site_code(site_code)
    return f"{_site_namespace_uri(site)}/{validate_package_class(class_name)}"


def enumeration_uri(site_code: str) -> str:
    """The resource URI WQL enumerations are sent to: the site namespace with class `*`."""
    return f"{_site_namespace_uri(validate_site_code(site_code))}/*"


def _site_namespace_uri(site: str) -> str:
    # WMI namespace root\SMS\site_<SITE>, spelled lower-case the way WinRM's own tools do.
    return f"{WMI_RESOURCE_URI_BASE}/root/sms/site_{site}"


def wql_string_literal(value: str) -> str:
    """`value` as a single-quoted WQL string literal that cannot end early.

    WQL escapes with a backslash, so backslashes and both quote characters are escaped;
    control characters are refused outright. Only ever used with validated values.
    """
    if not isinstance(value, str) or _CONTROL_CHARS_RE.search(value):
        raise InvalidRequestError(f"value {safe_repr(value)} cannot be used in a WQL query")
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    return f"'{escaped}'"


def package_query(
    class_name: str,
    package_ids: Iterable[str] | None = None,
    properties: Iterable[str] | None = None,
) -> str:
    """`SELECT <properties|*> FROM <class> [WHERE PackageID = '...' OR ...]`, from validated parts."""
    cls = validate_package_class(class_name)
    columns = [_validate_property_name(name) for name in properties] if properties is not None else []
    # Every part is validated: class from the allow-list, columns and ids by regex, literals escaped.
    query = f"SELECT {', '.join(columns) if columns else '*'} FROM {cls}"  # noqa: S608
    if package_ids is None:
        return query
    ids = [validate_package_id(package_id) for package_id in package_ids]
    if not ids:
        raise InvalidRequestError("a package query needs at least one PackageID")
    clauses = " OR ".join(f"{PACKAGE_ID_PROPERTY} = {wql_string_literal(pid)}" for pid in ids)
    return f"{query} WHERE {clauses}"


def _validate_property_name(name: object) -> str:
    if not isinstance(name, str) or not _PROPERTY_NAME_RE.fullmatch(name):
        raise InvalidRequestError(f"invalid property name {safe_repr(name)}")
    return name
