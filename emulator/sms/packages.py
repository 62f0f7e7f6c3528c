"""What a package is: the SMS_PackageBaseclass properties we serve, their codes and types.

Shared by the seeded generation (emulator.sms.generation) and the refresh semantics
(emulator.sms.catalogue); pure data, no behaviour beyond rendering properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from emulator.sms.wql import Value

__all__ = [
    "ACTION_NONE",
    "ACTION_UPDATE",
    "BASE_CLASS",
    "MEDIUM_NOT_READY_ERROR_CODE",
    "PACKAGE_CLASSES",
    "PROPERTY_NAMES",
    "PROPERTY_TYPES",
    "RETURN_MEDIUM_NOT_READY",
    "RETURN_NO_SOURCE",
    "RETURN_SUCCESS",
    "STORAGE_COMPRESS",
    "STORAGE_DIRECT",
    "STORAGE_NO_SOURCE",
    "Package",
    "format_datetime",
]

# PackageType per class (SMS_PackageBaseclass.PackageType).
PACKAGE_CLASSES: Final[dict[str, int]] = {
    "SMS_Package": 0,
    "SMS_DriverPackage": 3,
    "SMS_TaskSequencePackage": 4,
    "SMS_SoftwareUpdatesPackage": 5,
    "SMS_DeviceSettingPackage": 6,
    "SMS_ContentPackage": 8,
    "SMS_ImagePackage": 257,
    "SMS_BootImagePackage": 258,
    "SMS_OperatingSystemInstallPackage": 259,
}
BASE_CLASS: Final = "SMS_PackageBaseclass"  # abstract: queryable, never an instance's own class

STORAGE_NO_SOURCE: Final = 1
STORAGE_DIRECT: Final = 2
STORAGE_COMPRESS: Final = 3
ACTION_NONE: Final = 0
ACTION_UPDATE: Final = 1

RETURN_SUCCESS: Final = 0
RETURN_MEDIUM_NOT_READY: Final = 21  # ERROR_NOT_READY
RETURN_NO_SOURCE: Final = 50  # ERROR_NOT_SUPPORTED
# SMS_ExtendedStatus.ErrorCode for the medium failure in "fault" mode. The composite layout is
# documented (severity 31-30, facility 27-22, action 21-16, object 15-8, reason 7-0), the values
# are not: this one is ours: minor / file / read / instance / 21 (ERROR_NOT_READY).
MEDIUM_NOT_READY_ERROR_CODE: Final = 0x40820115

PROPERTY_TYPES: Final[dict[str, str]] = {
    "ActionInProgress": "uint32",
    "Description": "string",
    "Language": "string",
    "LastRefreshTime": "datetime",
    "Manufacturer": "string",
    "Name": "string",
    "PackageID": "string",
    "PackageType": "uint32",
    "PkgSourceFlag": "uint32",
    "PkgSourcePath": "string",
    "SourceDate": "datetime",
    "SourceSite": "string",
    "SourceVersion": "uint32",
    "StoredPkgPath": "string",
    "StoredPkgVersion": "uint32",
    "Version": "string",
}
# WMI hands properties back in alphabetical order; replies follow it.
PROPERTY_NAMES: Final[tuple[str, ...]] = tuple(sorted(PROPERTY_TYPES))


def format_datetime(value: datetime) -> str:
    """CIM datetime as WinRM renders it (`2026-11-23T10:00:00Z`)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Package:
    """One package's mutable state (the catalogue owns it; DistMgr's queue lives apart)."""

    package_id: str
    class_name: str
    name: str
    description: str | None
    manufacturer: str | None
    version: str | None
    language: str | None
    source_flag: int
    source_path: str | None
    source_version: int
    source_date: datetime
    last_refresh: datetime
    stored_version: int | None
    stored_path: str | None
    site_code: str
    medium_ready: bool = True
    failed_attempts: int = 0
    first_failure_mono: float | None = None

    def properties(self, action_in_progress: int) -> dict[str, Value]:
        """WMI properties; ActionInProgress comes from DistMgr's queue."""
        return {
            "ActionInProgress": action_in_progress,
            "Description": self.description,
            "Language": self.language,
            "LastRefreshTime": self.last_refresh,
            "Manufacturer": self.manufacturer,
            "Name": self.name,
            "PackageID": self.package_id,
            "PackageType": PACKAGE_CLASSES[self.class_name],
            "PkgSourceFlag": self.source_flag,
            "PkgSourcePath": self.source_path,
            "SourceDate": self.source_date,
            "SourceSite": self.site_code,
            "SourceVersion": self.source_version,
            "StoredPkgPath": self.stored_path,
            "StoredPkgVersion": self.stored_version,
            "Version": self.version,
        }
