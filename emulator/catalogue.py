"""The emulated site's packages and what ConfigMgr does with them (pure state, injected clocks).

Semantics, with the choices the SDK leaves open:

* A package belongs to exactly one class (its PackageType says which); looking it up through
  another class finds nothing, as in WMI.
* `RefreshPkgSource` returning 0 means *accepted*: ActionInProgress becomes 1 and, after
  `distmgr_delay_s` (0 = at once), Distribution Manager bumps SourceVersion (and the stored copy's
  StoredPkgVersion), stamps SourceDate / LastRefreshTime and clears ActionInProgress. A second
  refresh while one is pending is accepted and coalesced, as DistMgr processes a package once.
  Nothing runs in the background: pending work is settled lazily whenever a package is read.
* STORAGE_COMPRESS (3) packages whose source medium is not ready fail to refresh. In
  "return_value" mode the method returns 21 (ERROR_NOT_READY, "The device is not ready"): the
  SMS Provider reports Win32 codes in ReturnValue for other methods (2, 13, 183 ...), and 21 is
  the one Windows uses for a medium that is not ready. In "fault" mode the call fails with
  WBEM_E_FAILED and an SMS_ExtendedStatus describing the medium (see `MEDIUM_NOT_READY_*`).
  The medium becomes ready after `medium_ready_after_s` seconds counted from the package's
  *first failed attempt* (so every client sees at least one failure), after
  `medium_ready_after_attempts` failed attempts, or when told so (`set_medium_ready`).
* STORAGE_NO_SOURCE (1) packages have nothing to refresh: ReturnValue 50 (ERROR_NOT_SUPPORTED).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from emulator.settings import EmulatorSettings
from emulator.wql import Value

__all__ = [
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
    "Catalogue",
    "RefreshOutcome",
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
_CLASS_WEIGHTS: Final[dict[str, int]] = {
    "SMS_Package": 40,
    "SMS_DriverPackage": 32,
    "SMS_SoftwareUpdatesPackage": 7,
    "SMS_ImagePackage": 5,
    "SMS_BootImagePackage": 3,
    "SMS_OperatingSystemInstallPackage": 3,
    "SMS_TaskSequencePackage": 4,
    "SMS_ContentPackage": 4,
    "SMS_DeviceSettingPackage": 2,
}

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

_CATALOGUE_EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so a seed gives one catalogue
_FILE_SERVER: Final = r"\\fs01.lab.local\Sources$"
_NO_SOURCE_SHARE: Final = 0.04
_NAME_REDRAWS: Final = 20

_DRIVER_MODELS: Final[dict[str, tuple[str, ...]]] = {
    "Dell": ("Latitude 7440", "Latitude 5540", "OptiPlex 7010", "Precision 3581"),
    "HP": ("EliteBook 840 G10", "ProBook 450 G9", "EliteDesk 800 G9", "ZBook Firefly 14 G10"),
    "Lenovo": ("ThinkPad T14 Gen 4", "ThinkPad X1 Carbon Gen 11", "ThinkCentre M90q Gen 4"),
    "Microsoft": ("Surface Laptop 5", "Surface Pro 9"),
}
_APPLICATIONS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    # (Manufacturer, display name, versions)
    ("Adobe", "Adobe Acrobat Reader DC", ("24.002", "24.003", "25.001")),
    ("Igor Pavlov", "7-Zip", ("23.01", "24.08", "26.00")),
    ("Notepad++ Team", "Notepad++", ("8.6.9", "8.7.1", "8.8")),
    ("Google", "Google Chrome Enterprise", ("128.0", "130.0", "131.0")),
    ("Mozilla", "Mozilla Firefox ESR", ("115.14", "128.3")),
    ("Microsoft", "Microsoft Visual C++ 2015-2022 Redistributable", ("14.40", "14.42")),
    ("Cisco", "Cisco Secure Client", ("5.1.2", "5.1.6")),
    ("VideoLAN", "VLC media player", ("3.0.20", "3.0.21")),
)


def format_datetime(value: datetime) -> str:
    """CIM datetime as WinRM renders it (`2026-11-23T10:00:00Z`)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What a RefreshPkgSource call did: a ReturnValue, or (fault=True) a WMI failure to raise."""

    result: Literal["accepted", "no_source", "medium_not_ready"]
    return_value: int
    fault: bool = False


@dataclass(slots=True)
class _Package:
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
    action_in_progress: int = ACTION_NONE
    medium_ready: bool = True
    failed_attempts: int = 0
    first_failure_mono: float | None = None
    pending_due_mono: float | None = None

    def properties(self) -> dict[str, Value]:
        return {
            "ActionInProgress": self.action_in_progress,
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


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True, slots=True)
class _Identity:
    name: str
    description: str | None
    manufacturer: str | None
    version: str | None
    source_path: str


def _identity(rng: random.Random, class_name: str) -> _Identity:  # noqa: PLR0911 - one branch per class
    """A plausible name, vendor and source path for a package of the class."""
    if class_name == "SMS_DriverPackage":
        vendor = rng.choice(sorted(_DRIVER_MODELS))
        model = rng.choice(_DRIVER_MODELS[vendor])
        revision = {
            "Dell": f"A{rng.randint(1, 12):02d}",
            "HP": f"1.{rng.randint(0, 20):02d}",
            "Lenovo": f"{rng.randint(1, 4)}.{rng.randint(0, 9)}",
        }.get(vendor, f"2026.{rng.randint(1, 12)}")
        path = rf"{_FILE_SERVER}\Drivers\{vendor}\{model}\{revision}"
        return _Identity(
            f"{vendor} {model} Drivers {revision}", f"Driver pack for {vendor} {model}", vendor, revision, path
        )
    if class_name == "SMS_ImagePackage":
        build = rng.choice(("22H2", "23H2", "24H2"))
        month = f"2026-{rng.randint(1, 12):02d}"
        path = rf"{_FILE_SERVER}\OSD\Images\Win11-{build}-{month}\install.wim"
        return _Identity(
            f"Windows 11 Enterprise {build} x64 ({month})", "Captured reference image", "Microsoft", build, path
        )
    if class_name == "SMS_BootImagePackage":
        arch = rng.choice(("x64", "x64", "arm64"))
        adk = rng.choice(("10.0.22621.1", "10.0.26100.1"))
        path = rf"{_FILE_SERVER}\OSD\Boot\{arch}\{adk}\boot.wim"
        return _Identity(f"Boot image ({arch}) {adk}", "WinPE boot image", "Microsoft", adk, path)
    if class_name == "SMS_OperatingSystemInstallPackage":
        build = rng.choice(("23H2", "24H2"))
        path = rf"{_FILE_SERVER}\OSD\Upgrade\Win11-{build}"
        return _Identity(f"Windows 11 {build} Upgrade Package", "In-place upgrade media", "Microsoft", build, path)
    if class_name == "SMS_SoftwareUpdatesPackage":
        month = f"2026-{rng.randint(1, 12):02d}"
        path = rf"{_FILE_SERVER}\Updates\{month}"
        return _Identity(f"Software Updates - {month} Patch Tuesday", "Monthly updates", None, None, path)
    if class_name == "SMS_DeviceSettingPackage":
        profile = rng.choice(("Kiosk", "Wi-Fi Corporate", "BitLocker Baseline", "Edge Baseline"))
        path = rf"{_FILE_SERVER}\Settings\{profile}"
        return _Identity(f"Device Settings - {profile}", None, None, None, path)
    if class_name == "SMS_ContentPackage":
        content = rng.choice(("Office Templates", "Wallpapers", "Fonts", "Printer Drivers"))
        path = rf"{_FILE_SERVER}\Content\{content}"
        return _Identity(f"Content - {content} {rng.randint(2024, 2026)}", None, None, None, path)
    if class_name == "SMS_TaskSequencePackage":
        build = rng.choice(("23H2", "24H2"))
        path = rf"{_FILE_SERVER}\OSD\TaskSequences\Win11-{build}"
        return _Identity(f"Windows 11 {build} Deployment", "Task sequence", None, None, path)
    vendor, product, versions = rng.choice(_APPLICATIONS)
    version = rng.choice(versions)
    path = rf"{_FILE_SERVER}\Applications\{vendor}\{product}\{version}"
    return _Identity(f"{product} {version}", None, vendor, version, path)


def _generate(settings: EmulatorSettings) -> list[_Package]:
    """Build the seeded catalogue: same settings, same packages, whatever the clock says."""
    rng = random.Random(settings.seed)
    count = max(0, settings.package_count)
    site = settings.site_code.upper()
    classes = rng.choices(list(_CLASS_WEIGHTS), weights=list(_CLASS_WEIGHTS.values()), k=count)

    # Exact shares rather than per-package coin flips, so small catalogues still get them.
    order = list(range(count))
    rng.shuffle(order)
    compress_count = round(count * settings.compress_share)
    no_source_count = max(1, round(count * _NO_SOURCE_SHARE)) if count >= 10 else 0
    compress = set(order[:compress_count])
    no_source = set(order[compress_count : compress_count + no_source_count])
    not_ready = set(order[: round(compress_count * settings.medium_not_ready_share)])

    packages: list[_Package] = []
    seen_names: set[str] = set()
    number = rng.randint(0x10, 0x200)
    for index, class_name in enumerate(classes):
        number += rng.randint(1, 4)  # IDs are allocated in sequence; deleted packages leave gaps
        identity = _identity(rng, class_name)
        for _ in range(_NAME_REDRAWS):  # another revision / month reads better than "(2)"
            if identity.name not in seen_names:
                break
            identity = _identity(rng, class_name)
        name = identity.name
        suffix = 2
        while name in seen_names:
            name = f"{identity.name} ({suffix})"
            suffix += 1
        seen_names.add(name)
        source_date = (_CATALOGUE_EPOCH - timedelta(days=rng.randint(1, 900), seconds=rng.randint(0, 86_399))).replace(
            microsecond=0
        )
        source_version = rng.randint(1, 40)
        package_id = f"{site}{number & 0xFFFFF:05X}"
        flag = STORAGE_COMPRESS if index in compress else STORAGE_NO_SOURCE if index in no_source else STORAGE_DIRECT
        packages.append(
            _Package(
                package_id=package_id,
                class_name=class_name,
                name=name,
                description=identity.description,
                manufacturer=identity.manufacturer,
                version=identity.version,
                language="English" if rng.random() < 0.6 else None,
                source_flag=flag,
                source_path=None if flag == STORAGE_NO_SOURCE else identity.source_path,
                source_version=source_version,
                source_date=source_date,
                last_refresh=source_date + timedelta(minutes=rng.randint(1, 180)),
                stored_version=source_version if flag == STORAGE_COMPRESS else None,
                stored_path=rf"\\{settings.machine.split('.')[0].upper()}\SMSPKGE$\{package_id}.PCK"
                if flag == STORAGE_COMPRESS
                else None,
                site_code=site,
                medium_ready=index not in not_ready,
            )
        )
    return packages


# --------------------------------------------------------------------------- the catalogue


class Catalogue:
    """Packages by id, with ConfigMgr's refresh semantics. Not thread-safe: the Provider locks."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._packages: dict[str, _Package] = {p.package_id: p for p in _generate(settings)}
        self._classes_by_lower = {name.lower(): name for name in (*PACKAGE_CLASSES, BASE_CLASS)}

    # ---- lookups

    def canonical_class(self, name: str) -> str | None:
        """The class's canonical spelling (WMI class names are case-insensitive), or None."""
        return self._classes_by_lower.get(name.lower())

    def package_ids(self) -> list[str]:
        return list(self._packages)

    def class_of(self, package_id: str) -> str | None:
        package = self._packages.get(package_id.upper())
        return None if package is None else package.class_name

    def instance(self, class_name: str, package_id: str) -> dict[str, Value] | None:
        """Current properties of the package if it is an instance of exactly that class."""
        package = self._packages.get(package_id.upper())
        if package is None or package.class_name != class_name:
            return None
        self._settle(package)
        return package.properties()

    def instances(self, class_name: str) -> Iterator[tuple[str, dict[str, Value]]]:
        """(own class, properties) of every instance of the class; the base class yields all."""
        for package in self._packages.values():
            if class_name in (BASE_CLASS, package.class_name):
                self._settle(package)
                yield package.class_name, package.properties()

    # ---- refresh

    def refresh(self, package_id: str) -> RefreshOutcome:
        """RefreshPkgSource on an existing package (the caller checked class and access)."""
        package = self._packages[package_id.upper()]
        self._settle(package)
        if package.source_flag == STORAGE_NO_SOURCE:
            return RefreshOutcome("no_source", RETURN_NO_SOURCE)
        if package.source_flag == STORAGE_COMPRESS and not self._medium_ready_now(package):
            package.failed_attempts += 1
            if package.first_failure_mono is None:
                package.first_failure_mono = self._clock()
            fault = self._settings.medium_failure_mode == "fault"
            return RefreshOutcome("medium_not_ready", RETURN_MEDIUM_NOT_READY, fault=fault)
        if package.pending_due_mono is None:
            package.action_in_progress = ACTION_UPDATE
            package.pending_due_mono = self._clock() + max(0.0, self._settings.distmgr_delay_s)
            self._settle(package)
        return RefreshOutcome("accepted", RETURN_SUCCESS)

    def medium_not_ready_description(self, package_id: str) -> str:
        return (
            f"The source medium of package {package_id.upper()} (STORAGE_COMPRESS) is not ready. "
            "Insert or mount the source medium, then refresh the package source again."
        )

    def _medium_ready_now(self, package: _Package) -> bool:
        if package.medium_ready:
            return True
        after_s = self._settings.medium_ready_after_s
        after_attempts = self._settings.medium_ready_after_attempts
        first_failure = package.first_failure_mono
        if after_s is not None and first_failure is not None and self._clock() - first_failure >= after_s:
            package.medium_ready = True
        if after_attempts is not None and package.failed_attempts >= after_attempts:
            package.medium_ready = True
        return package.medium_ready

    def _settle(self, package: _Package) -> None:
        """Apply a refresh DistMgr has finished by now (lazy: evaluated on every read)."""
        due = package.pending_due_mono
        if due is None:
            return
        now = self._clock()
        if now < due:
            return
        finished_at = datetime.fromtimestamp(self._wall_clock() - (now - due), tz=UTC).replace(microsecond=0)
        package.source_version += 1
        package.source_date = finished_at
        package.last_refresh = finished_at
        if package.stored_version is not None:
            package.stored_version = package.source_version
        package.action_in_progress = ACTION_NONE
        package.pending_due_mono = None

    # ---- control and observation

    def set_medium_ready(self, package_id: str | None, ready: bool) -> list[str]:
        """Set the medium state of one or every STORAGE_COMPRESS package; returns ids changed."""
        if package_id is None:
            targets = list(self._packages.values())
        else:
            found = self._packages.get(package_id.upper())
            targets = [] if found is None else [found]
        changed: list[str] = []
        for package in targets:
            if package.source_flag != STORAGE_COMPRESS:
                continue
            self._medium_ready_now(package)  # fold in automatic readiness before comparing
            if package.medium_ready != ready:
                package.medium_ready = ready
                changed.append(package.package_id)
            # A medium taken out starts its automatic-readiness count afresh.
            package.failed_attempts = 0
            package.first_failure_mono = None
        return changed

    def snapshot(self, package_id: str) -> dict[str, Any] | None:
        """JSON-ready properties plus the emulator's own state (keys starting with `_`)."""
        package = self._packages.get(package_id.upper())
        if package is None:
            return None
        self._settle(package)
        ready = self._medium_ready_now(package) if package.source_flag == STORAGE_COMPRESS else None
        view: dict[str, Any] = {"__CLASS": package.class_name}
        for name, value in package.properties().items():
            view[name] = format_datetime(value) if isinstance(value, datetime) else value
        view["_medium_ready"] = ready
        view["_failed_refresh_attempts"] = package.failed_attempts
        view["_refresh_pending"] = package.pending_due_mono is not None
        return view

    def summaries(self) -> list[dict[str, Any]]:
        summaries = []
        for package in self._packages.values():
            self._settle(package)
            summaries.append(
                {
                    "PackageID": package.package_id,
                    "Name": package.name,
                    "class": package.class_name,
                    "PkgSourceFlag": package.source_flag,
                    "SourceVersion": package.source_version,
                    "ActionInProgress": package.action_in_progress,
                    "medium_ready": self._medium_ready_now(package)
                    if package.source_flag == STORAGE_COMPRESS
                    else None,
                }
            )
        return summaries
