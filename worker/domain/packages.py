"""The ConfigMgr domain: package classes, PackageID and site-code rules, and a package's properties.

Facts, not protocol: which classes document `RefreshPkgSource` (every `SMS_PackageBaseclass`
child; `SMS_TaskSequencePackage` only when forced, because Microsoft warns the refresh can
render the task sequence inoperable; `SMS_ContentPackage` never, see REFUSED_CLASSES), what a
PackageID looks like (the creating site's code and five hex digits), and the `PkgSourceFlag`
values. Values from producers are checked here before
they reach a WS-Man selector, a resource URI or a WQL string; errors echo a bad value only as a
short `repr`, so hostile input cannot forge log lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final

from errors import InvalidRequestError, ProtocolError
from worker.wsman.replies import WmiInstance
from worker.wsman.selectors import enumeration_uri, resource_uri

__all__ = [
    "APPLICATION_CONTENT_CLASS",
    "BOOT_IMAGE_CLASS",
    "ONE_AT_A_TIME_CLASSES",
    "PACKAGE_CLASSES",
    "PACKAGE_ID_PROPERTY",
    "REFUSED_CLASSES",
    "STORAGE_COMPRESS",
    "TASK_SEQUENCE_CLASS",
    "PackageInfo",
    "PkgSourceFlag",
    "package_resource_uri",
    "safe_repr",
    "site_enumeration_uri",
    "validate_package_class",
    "validate_package_id",
    "validate_refreshable_class",
    "validate_site_code",
]

# Site code: 3 letters or digits (docs/configmgr.md).
_SITE_CODE_RE = re.compile(r"[A-Za-z0-9]{3}")
# PackageID: the creating site's code + 5 hex digits. The site may be a parent site, so only
# the shape is checked, not that it starts with the provider's own site code.
_PACKAGE_ID_RE = re.compile(r"[A-Za-z0-9]{3}[0-9A-Fa-f]{5}")

_SAFE_REPR_MAX_CHARS = 64
_ELLIPSIS = "..."
_MAX_MESSAGE_ECHO_CHARS = 120

TASK_SEQUENCE_CLASS = "SMS_TaskSequencePackage"
BOOT_IMAGE_CLASS = "SMS_BootImagePackage"
APPLICATION_CONTENT_CLASS = "SMS_ContentPackage"
# Classes that document the instance method RefreshPkgSource (SMS_PackageBaseclass children).
PACKAGE_CLASSES: tuple[str, ...] = (
    "SMS_Package",
    "SMS_DriverPackage",
    "SMS_ImagePackage",
    BOOT_IMAGE_CLASS,
    "SMS_OperatingSystemInstallPackage",
    "SMS_SoftwareUpdatesPackage",
    "SMS_DeviceSettingPackage",
    APPLICATION_CONTENT_CLASS,
    TASK_SEQUENCE_CLASS,
)
_CANONICAL_CLASS = {name.lower(): name for name in PACKAGE_CLASSES}
# Classes refreshed one at a time per site, within its provider cap: a boot image's refresh
# rebuilds the image on the provider (minutes of CPU and disk each).
ONE_AT_A_TIME_CLASSES: Final = frozenset({BOOT_IMAGE_CLASS})
# Classes no request may refresh (yet), each with the reason the producer is told.
REFUSED_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        APPLICATION_CONTENT_CLASS: (
            f"{APPLICATION_CONTENT_CLASS} is refused: an application's content is updated through its "
            "deployment type (Update Content), not RefreshPkgSource; a raw refresh is not the console's "
            "action and cannot be verified (SourceVersion stays 1)"
        ),
    }
)
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


def validate_refreshable_class(value: object) -> str:
    """`validate_package_class`, and InvalidRequestError (saying why) for a class in REFUSED_CLASSES."""
    canonical = validate_package_class(value)
    reason = REFUSED_CLASSES.get(canonical)
    if reason is not None:
        raise InvalidRequestError(reason)
    return canonical


def validate_package_class(value: object) -> str:
    """The canonical spelling of an allowed package class (input matched case-insensitively)."""
    canonical = _CANONICAL_CLASS.get(value.lower()) if isinstance(value, str) else None
    if canonical is None:
        raise InvalidRequestError(
            f"invalid package class {safe_repr(value)}: expected one of {', '.join(PACKAGE_CLASSES)}"
        )
    return canonical


class PkgSourceFlag(IntEnum):
    """`SMS_PackageBaseclass.PkgSourceFlag` values (docs/configmgr.md)."""

    STORAGE_NEEDS_SPECIFYING = 0
    STORAGE_NO_SOURCE = 1
    STORAGE_DIRECT = 2
    STORAGE_COMPRESS = 3
    STORAGE_LOCAL = 4


STORAGE_COMPRESS = int(PkgSourceFlag.STORAGE_COMPRESS)


@dataclass(frozen=True)
class PackageInfo:
    """The package properties the worker uses, typed (None where the reply had no value)."""

    class_name: str
    package_id: str
    name: str | None = None
    package_type: int | None = None
    pkg_source_flag: int | None = None
    pkg_source_path: str | None = None
    source_version: int | None = None
    source_date: str | None = None
    last_refresh_time: str | None = None
    action_in_progress: int | None = None

    @property
    def is_storage_compress(self) -> bool:
        """True for STORAGE_COMPRESS packages, whose source medium may not be ready."""
        return self.pkg_source_flag == STORAGE_COMPRESS

    @classmethod
    def from_instance(cls, inst: WmiInstance) -> PackageInfo:
        """Type the properties of a package instance; ProtocolError if one cannot be trusted."""
        package_id = _scalar(inst, "PackageID")
        if not package_id or not package_id.strip():
            raise ProtocolError(f"{inst.class_name} instance carries no PackageID")
        return cls(
            class_name=inst.class_name,
            package_id=package_id.strip(),
            name=_scalar(inst, "Name"),
            package_type=_int_property(inst, "PackageType"),
            pkg_source_flag=_int_property(inst, "PkgSourceFlag"),
            pkg_source_path=_scalar(inst, "PkgSourcePath"),
            source_version=_int_property(inst, "SourceVersion"),
            source_date=_stripped(_scalar(inst, "SourceDate")),
            last_refresh_time=_stripped(_scalar(inst, "LastRefreshTime")),
            action_in_progress=_int_property(inst, "ActionInProgress"),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for outcomes."""
        return {
            "class": self.class_name,
            "package_id": self.package_id,
            "name": self.name,
            "package_type": self.package_type,
            "pkg_source_flag": self.pkg_source_flag,
            "pkg_source_path": self.pkg_source_path,
            "source_version": self.source_version,
            "source_date": self.source_date,
            "last_refresh_time": self.last_refresh_time,
            "action_in_progress": self.action_in_progress,
        }


def _scalar(inst: WmiInstance, name: str) -> str | None:
    value = inst.get(name)
    if isinstance(value, list):
        raise ProtocolError(f"{inst.class_name}.{name} is an array, expected one value")
    return value


def _int_property(inst: WmiInstance, name: str) -> int | None:
    value = _scalar(inst, name)
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise ProtocolError(f"{inst.class_name}.{name} is {_echo(value)}, not an integer") from None


def _stripped(value: str | None) -> str | None:
    return value.strip() if value is not None else None


def _echo(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_MESSAGE_ECHO_CHARS else text[: _MAX_MESSAGE_ECHO_CHARS - 3] + "..."


def package_resource_uri(site_code: str, package_class: str) -> str:
    """The WS-Man resource URI of a package class at a site, from validated, canonical parts."""
    return resource_uri(validate_site_code(site_code), validate_package_class(package_class))


def site_enumeration_uri(site_code: str) -> str:
    """The resource URI a site's WQL enumerations go to."""
    return enumeration_uri(validate_site_code(site_code))
