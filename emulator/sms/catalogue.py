"""The emulated site's packages and what ConfigMgr does with them (pure state, injected clocks).

Semantics, with the choices the SDK leaves open:

* A package belongs to exactly one class (its PackageType says which); looking it up through
  another class finds nothing, as in WMI.
* `RefreshPkgSource` returning 0 means *accepted*: the provider stamps LastRefreshTime (our
  model's assumption: the time of the last accepted call, so a client can tell whether an
  interrupted call landed) and queues the package for Distribution Manager (emulator.sms.distmgr:
  FIFO, `distmgr_threads` at a time, `distmgr_time_per_package_s` each). ActionInProgress is 1
  while the package is queued or processing. When DistMgr has processed it, SourceVersion (and
  the stored copy's StoredPkgVersion) goes up by one, SourceDate is when that happened, and
  ActionInProgress is 0 again. A refresh accepted while the package is still queued is
  coalesced into the queued one. Nothing runs in the background: DistMgr's history up to now is
  replayed whenever the catalogue is used, so the dates say when DistMgr finished, not when
  someone looked.
* STORAGE_COMPRESS (3) packages whose source medium is not ready fail to refresh. In
  "return_value" mode the method returns 21 (ERROR_NOT_READY, "The device is not ready"): the
  SMS Provider reports Win32 codes in ReturnValue for other methods (2, 13, 183 ...), and 21 is
  the one Windows uses for a medium that is not ready. In "fault" mode the call fails with
  WBEM_E_FAILED and an SMS_ExtendedStatus describing the medium (see `MEDIUM_NOT_READY_*`).
  The medium becomes ready after `medium_ready_after_s` seconds counted from the package's
  *first failed attempt* (so every client sees at least one failure), after
  `medium_ready_after_attempts` failed attempts, or when told so (`set_medium_ready`).
* STORAGE_NO_SOURCE (1) packages have nothing to refresh: ReturnValue 50 (ERROR_NOT_SUPPORTED).

Lookups cost the same whatever the catalogue's size: packages by id, and WQL conditions that
pin PackageID (`PackageID = '...' [OR ...]`, possibly ANDed with more) through an index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from emulator.settings import EmulatorSettings
from emulator.sms.content_status import DISTRIBUTION_POINT_CLASS, DP_CLASS_PROPERTIES, ContentStatus, RowKey
from emulator.sms.distmgr import DistMgr
from emulator.sms.generation import generate
from emulator.sms.packages import (
    ACTION_NONE,
    ACTION_UPDATE,
    BASE_CLASS,
    PACKAGE_CLASSES,
    PROPERTY_NAMES,
    RETURN_MEDIUM_NOT_READY,
    RETURN_NO_SOURCE,
    RETURN_SUCCESS,
    STORAGE_COMPRESS,
    STORAGE_NO_SOURCE,
    Package,
    format_datetime,
)
from emulator.sms.pkgxfer import Schedule
from emulator.sms.wql import Expr, Value
from emulator.sms.wql_eval import equality_keys, evaluate, pins_only

__all__ = ["Catalogue", "InstanceKey", "RefreshOutcome"]

_KEY_PROPERTY: Final = "PackageID"

# A package class's instance is keyed by its PackageID; a content status row by RowKey.
InstanceKey = str | RowKey


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What a RefreshPkgSource call did: a ReturnValue, or (fault=True) a WMI failure to raise."""

    result: Literal["accepted", "no_source", "medium_not_ready"]
    return_value: int
    fault: bool = False


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
        packages = generate(settings)
        self._packages: dict[str, Package] = {p.package_id: p for p in packages}
        # WQL compares strings case-insensitively (casefold), so the index is keyed that way.
        self._by_folded_id = {p.package_id.casefold(): p for p in packages}
        self._position = {p.package_id: index for index, p in enumerate(packages)}
        self._classes_by_lower = {name.lower(): name for name in (*PACKAGE_CLASSES, BASE_CLASS, *DP_CLASS_PROPERTIES)}
        self._distmgr = DistMgr(
            threads=settings.distmgr_threads, time_per_package_s=settings.distmgr_time_per_package_s, clock=clock
        )
        self._content = ContentStatus(settings, clock=clock, wall_clock=wall_clock)

    # ---- lookups

    def canonical_class(self, name: str) -> str | None:
        """The class's canonical spelling (WMI class names are case-insensitive), or None."""
        return self._classes_by_lower.get(name.lower())

    @staticmethod
    def is_content_class(class_name: str) -> bool:
        """A class of distribution status (rows per package x DP), not a package class."""
        return class_name in DP_CLASS_PROPERTIES

    @staticmethod
    def property_names(class_name: str) -> tuple[str, ...]:
        """The class's properties, in the order WMI returns them."""
        return DP_CLASS_PROPERTIES.get(class_name, PROPERTY_NAMES)

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
        self._advance()
        return self._properties(package)

    def instances(self, class_name: str) -> Iterator[tuple[str, dict[str, Value]]]:
        """(own class, properties) of every instance of the class; the base class yields all."""
        self._advance()
        for package in self._packages.values():
            if class_name in (BASE_CLASS, package.class_name):
                yield package.class_name, self._properties(package)

    def matching(self, class_name: str, where: Expr | None) -> list[InstanceKey]:
        """Keys of the class's instances satisfying a resolved WQL condition, in catalogue order."""
        self._advance()
        if self.is_content_class(class_name):
            key_property = self._content.package_key(class_name)
            candidates = self._candidates(where, key_property)
            # `PackageID = 'A' OR ...` (the worker's chunked query) is settled by the index alone.
            condition = None if pins_only(where, key_property) else where
            return list(self._content.matching(class_name, condition, candidates))
        return [
            package.package_id
            for package in self._candidates(where, _KEY_PROPERTY)
            if class_name in (BASE_CLASS, package.class_name)
            and (where is None or evaluate(where, self._properties(package)))
        ]

    def _candidates(self, where: Expr | None, key_property: str) -> list[Package]:
        """The packages a condition can match: those it pins by PackageID (an index), else all."""
        keys = equality_keys(where, key_property)
        if keys is None:
            return list(self._packages.values())
        found = (self._by_folded_id.get(key) for key in keys)
        return sorted((p for p in found if p is not None), key=lambda p: self._position[p.package_id])

    def render(self, class_name: str, keys: Iterable[InstanceKey]) -> list[tuple[str, dict[str, Value]]]:
        """(own class, current properties) of each instance still there, in order (a page to render)."""
        self._advance()
        if self.is_content_class(class_name):
            row_keys = [key for key in keys if isinstance(key, tuple)]
            return self._content.render(class_name, row_keys, self._packages)
        found = (self._packages.get(key.upper()) for key in keys if isinstance(key, str))
        return [(package.class_name, self._properties(package)) for package in found if package is not None]

    def current(self, package_ids: Iterable[str]) -> list[tuple[str, dict[str, Value]]]:
        """(own class, current properties) of each existing package, in order."""
        return self.render(BASE_CLASS, package_ids)

    # ---- distribution points

    def distribution_point(self, package_id: str, server_nal_path: str) -> dict[str, Value] | None:
        """The package's SMS_DistributionPoint instance on the DP the NAL path names, or None."""
        package = self._packages.get(package_id.upper())
        dp_index = self._content.dp_index(server_nal_path)
        if package is None or dp_index is None:
            return None
        self._advance()
        page = self._content.render(DISTRIBUTION_POINT_CLASS, [(package.package_id, dp_index, 0)], self._packages)
        return page[0][1] if page else None

    def refresh_now(self, package_id: str, server_nal_path: str) -> bool:
        """RefreshNow: re-send the package to that DP; False when there is no such instance."""
        package = self._packages.get(package_id.upper())
        dp_index = self._content.dp_index(server_nal_path)
        if package is None or dp_index is None:
            return False
        self._advance()
        self._content.refresh_now(package, dp_index)
        return True

    def distribution(self) -> dict[str, Any]:
        """PkgXferMgr's settings, DPs with their faults, rows by state and open jobs (JSON-ready)."""
        self._advance()
        return self._content.snapshot(self._packages)

    def control_distribution(
        self,
        *,
        dp: str | None = None,
        offline: bool | None = None,
        failure_share: float | None = None,
        schedule: Schedule | None = None,
        clear_schedule: bool = False,
        hold: bool | None = None,
    ) -> None:
        """Change one DP's faults (by name) and/or hold / release PkgXferMgr; ValueError if unknown."""
        self._advance()
        xfer = self._content.xfer
        if dp is not None:
            index = self.dp_index_by_name(dp)
            if index is None:
                raise ValueError(f"no DP named {dp!r}")
            if offline is not None:
                xfer.set_offline(index, offline)
            if failure_share is not None:
                xfer.set_failure_share(index, failure_share)
            if schedule is not None or clear_schedule:
                xfer.set_schedule(index, schedule)
        if hold is True:
            xfer.hold()
        elif hold is False:
            xfer.release()
        self._advance()

    def dp_index_by_name(self, name: str) -> int | None:
        """A DP by its FQDN or short name (DP03), case-insensitive."""
        wanted = name.casefold()
        for dp in self._content.xfer.dps:
            if wanted in (dp.name.casefold(), dp.short_name.casefold()):
                return dp.index
        return None

    def distribution_rows(self, package_id: str) -> list[dict[str, object]] | None:
        """One package's row on every DP (JSON-ready), None for an unknown package."""
        package = self._packages.get(package_id.upper())
        if package is None:
            return None
        self._advance()
        return self._content.package_rows(package)

    # ---- refresh

    def refresh(self, package_id: str) -> RefreshOutcome:
        """RefreshPkgSource on an existing package (the caller checked class and access)."""
        package = self._packages[package_id.upper()]
        self._advance()
        if package.source_flag == STORAGE_NO_SOURCE:
            return RefreshOutcome("no_source", RETURN_NO_SOURCE)
        if package.source_flag == STORAGE_COMPRESS and not self._medium_ready_now(package):
            package.failed_attempts += 1
            if package.first_failure_mono is None:
                package.first_failure_mono = self._clock()
            fault = self._settings.medium_failure_mode == "fault"
            return RefreshOutcome("medium_not_ready", RETURN_MEDIUM_NOT_READY, fault=fault)
        package.last_refresh = datetime.fromtimestamp(self._wall_clock(), tz=UTC).replace(microsecond=0)
        self._distmgr.submit(package.package_id)
        self._advance()  # with a free thread and no time per package, processed at once
        return RefreshOutcome("accepted", RETURN_SUCCESS)

    def refresh_pending(self, package_id: str) -> bool:
        """Queued or processing in DistMgr now (an unknown package has nothing pending)."""
        self._advance()
        return self._distmgr.busy(package_id.upper())

    def medium_not_ready_description(self, package_id: str) -> str:
        return (
            f"The source medium of package {package_id.upper()} (STORAGE_COMPRESS) is not ready. "
            "Insert or mount the source medium, then refresh the package source again. "
            "Error: 0x80070015 (ERROR_NOT_READY): The device is not ready."
        )

    def _medium_ready_now(self, package: Package) -> bool:
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

    def _advance(self) -> None:
        """Apply every package DistMgr has finished by now (its source snapshot), then PkgXferMgr's copies."""
        processed = self._distmgr.advance()
        now_mono, now_wall = self._clock(), self._wall_clock()
        for item in processed:
            package = self._packages[item.package_id]
            # PkgXferMgr catches up to the moment DistMgr finished, then the copies begin there.
            self._content.replay(item.finished_at)
            finished_at = datetime.fromtimestamp(now_wall - (now_mono - item.finished_at), tz=UTC)
            old_version = package.source_version
            package.source_version += 1
            package.source_date = finished_at.replace(microsecond=0)
            if package.stored_version is not None:
                package.stored_version = package.source_version
            self._content.processed(package, old_version, item.finished_at)
        self._content.replay(now_mono)

    def _properties(self, package: Package) -> dict[str, Value]:
        return package.properties(ACTION_UPDATE if self._distmgr.busy(package.package_id) else ACTION_NONE)

    # ---- Distribution Manager control and observation

    def distmgr(self) -> dict[str, Any]:
        """DistMgr's settings, queue sizes and counters (JSON-ready)."""
        self._advance()
        return self._distmgr.snapshot()

    def control_distmgr(
        self, *, time_per_package_s: float | None = None, hold: bool | None = None, drain: bool = False
    ) -> None:
        """Change the time per package (for packages started from now on), hold or release
        DistMgr, then (drain) process now every package queued or processing."""
        self._advance()
        if time_per_package_s is not None:
            self._distmgr.set_time_per_package(time_per_package_s)
        if hold is True:
            self._distmgr.hold()
        elif hold is False:
            self._distmgr.release()
        if drain:
            self._distmgr.drain()
        self._advance()

    # ---- medium control and observation

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
        self._advance()
        ready = self._medium_ready_now(package) if package.source_flag == STORAGE_COMPRESS else None
        view: dict[str, Any] = {"__CLASS": package.class_name}
        for name, value in self._properties(package).items():
            view[name] = format_datetime(value) if isinstance(value, datetime) else value
        view["_medium_ready"] = ready
        view["_failed_refresh_attempts"] = package.failed_attempts
        view["_refresh_pending"] = self._distmgr.busy(package.package_id)
        view["_distmgr_state"] = self._distmgr.state(package.package_id)
        return view

    def summaries(self) -> list[dict[str, Any]]:
        self._advance()
        busy = self._distmgr.busy
        return [
            {
                "PackageID": package.package_id,
                "Name": package.name,
                "class": package.class_name,
                "PkgSourceFlag": package.source_flag,
                "SourceVersion": package.source_version,
                "ActionInProgress": ACTION_UPDATE if busy(package.package_id) else ACTION_NONE,
                "medium_ready": self._medium_ready_now(package) if package.source_flag == STORAGE_COMPRESS else None,
            }
            for package in self._packages.values()
        ]
