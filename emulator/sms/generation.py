"""The seeded catalogue: same settings, same packages, whatever the clock says (pure).

Plausible names, vendors and source paths per class; PackageIDs allocated in sequence with
gaps; exact shares of STORAGE_COMPRESS, STORAGE_NO_SOURCE and not-ready media.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from emulator.settings import EmulatorSettings
from emulator.sms.packages import STORAGE_COMPRESS, STORAGE_DIRECT, STORAGE_NO_SOURCE, Package

__all__ = ["generate"]

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
_CATALOGUE_EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so a seed gives one catalogue
_FILE_SERVER: Final = r"\\fs01.lab.local\Sources$"
_NO_SOURCE_SHARE: Final = 0.04
_NAME_REDRAWS: Final = 20
# A class whose redraws came up empty this many times has used up its names: later packages of
# it take a " (n)" suffix at once. Small catalogues never get there; a big one would otherwise
# redraw 20 times per package.
_EXHAUSTED_AFTER: Final = 10

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


def generate(settings: EmulatorSettings) -> list[Package]:
    """The seeded catalogue's packages, in PackageID order."""
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

    packages: list[Package] = []
    seen_names: set[str] = set()
    # Next " (n)" to try per base name. Base names never end in " (<digits>)", so a suffixed
    # name cannot collide with another base and counting from the last one used is exact.
    next_suffix: dict[str, int] = {}
    exhausted: dict[str, int] = dict.fromkeys(_CLASS_WEIGHTS, 0)
    number = rng.randint(0x10, 0x200)
    for index, class_name in enumerate(classes):
        number += rng.randint(1, 4)  # IDs are allocated in sequence; deleted packages leave gaps
        identity = _identity(rng, class_name)
        if exhausted[class_name] < _EXHAUSTED_AFTER:
            for _ in range(_NAME_REDRAWS):  # another revision / month reads better than "(2)"
                if identity.name not in seen_names:
                    break
                identity = _identity(rng, class_name)
            else:
                exhausted[class_name] += int(identity.name in seen_names)
        name = identity.name
        suffix = next_suffix.get(name, 2)
        while name in seen_names:
            name = f"{identity.name} ({suffix})"
            suffix += 1
        next_suffix[identity.name] = suffix
        seen_names.add(name)
        source_date = (_CATALOGUE_EPOCH - timedelta(days=rng.randint(1, 900), seconds=rng.randint(0, 86_399))).replace(
            microsecond=0
        )
        source_version = rng.randint(1, 40)
        package_id = f"{site}{number & 0xFFFFF:05X}"
        flag = STORAGE_COMPRESS if index in compress else STORAGE_NO_SOURCE if index in no_source else STORAGE_DIRECT
        packages.append(
            Package(
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
