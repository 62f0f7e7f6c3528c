"""The site's distribution points and the WMI classes that show content on them.

PkgXferMgr's model (emulator.sms.pkgxfer) holds rows and jobs; this module names the DPs (from
the settings), renders rows as the classes' instances and selects them with WQL:

* `SMS_PackageStatusDistPointsSummarizer`: one row per package x DP (State, SourceVersion).
* `SMS_DistributionDPStatus`: the last status message per package x DP.
* `SMS_DistributionJob`: PkgXferMgr's open jobs (pending, in progress, retrying, failed).
* `SMS_ObjectContentExtraInfo`: per package, how many DPs are targeted / done / in progress / failed.
* `SMS_DistributionPoint`: one per package x DP; a Put of `RefreshNow = true` re-sends it.

Every package is on every DP. A row's key is `(PackageID, DP index, JobID)` (-1 / 0 where the
class has no DP or no job): the first element is always the PackageID, which RBAC filters on.
Not thread-safe: the catalogue (under the provider's lock) owns it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Final

from emulator.settings import EmulatorSettings
from emulator.sms.packages import PACKAGE_CLASSES, Package
from emulator.sms.pkgxfer import (
    JOB_FAILED,
    MESSAGE_ERROR,
    MESSAGE_SUCCESS,
    STATE_CONTENT_UPDATING,
    STATE_INSTALL_FAILED,
    STATE_INSTALL_PENDING,
    STATE_INSTALL_RETRYING,
    STATE_INSTALLED,
    DistributionPoint,
    Job,
    PkgXferMgr,
    Row,
    Schedule,
)
from emulator.sms.wql import Expr, Value
from emulator.sms.wql_eval import evaluate

__all__ = [
    "DISTRIBUTION_POINT_CLASS",
    "DP_CLASS_PROPERTIES",
    "ContentStatus",
    "RowKey",
    "build_distribution_points",
    "nal_path",
]

RowKey = tuple[str, int, int]  # (PackageID, DP index or -1, JobID or 0)

SUMMARIZER_CLASS: Final = "SMS_PackageStatusDistPointsSummarizer"
DP_STATUS_CLASS: Final = "SMS_DistributionDPStatus"
JOB_CLASS: Final = "SMS_DistributionJob"
EXTRA_INFO_CLASS: Final = "SMS_ObjectContentExtraInfo"
DISTRIBUTION_POINT_CLASS: Final = "SMS_DistributionPoint"

# Property names per class (WMI returns them in alphabetical order).
DP_CLASS_PROPERTIES: Final[dict[str, tuple[str, ...]]] = {
    SUMMARIZER_CLASS: (
        "LastCopied",
        "PackageID",
        "ServerNALPath",
        "SiteCode",
        "SourceVersion",
        "State",
        "SummaryDate",
    ),
    DP_STATUS_CLASS: (
        *sorted(
            (
                "LastUpdateDate",
                "MessageID",
                "MessageSeverity",
                "MessageState",
                "NALPath",
                "Name",
                "PackageID",
                "SiteCode",
                *(f"InsString{n}" for n in range(1, 11)),
            )
        ),
    ),
    JOB_CLASS: (
        "CreationTime",
        "JobID",
        "LastUpdateTime",
        "NALPath",
        "PackageVersion",
        "PkgID",
        "RemainingSize",
        "RetryCount",
        "State",
        "TotalSize",
    ),
    EXTRA_INFO_CLASS: (
        "LastUpdateDate",
        "NumberErrors",
        "NumberInProgress",
        "NumberSuccess",
        "NumberUnknown",
        "ObjectID",
        "ObjectType",
        "PackageID",
        "SoftwareName",
        "SourceSize",
        "Targeted",
    ),
    DISTRIBUTION_POINT_CLASS: ("PackageID", "RefreshNow", "ServerNALPath", "SiteCode", "SourceSite"),
}
_PACKAGE_KEY: Final[dict[str, str]] = {
    name: "PkgID" if name == JOB_CLASS else "PackageID" for name in DP_CLASS_PROPERTIES
}

# SMS_StatusMessage severities, as status message queries show them.
_SEVERITY_INFORMATIONAL: Final = 0x40000000
_SEVERITY_ERROR: Final = 0xC0000000
_IN_PROGRESS_STATES: Final = frozenset({STATE_INSTALL_PENDING, STATE_INSTALL_RETRYING, STATE_CONTENT_UPDATING})
_MIN_PACKAGE_BYTES: Final = 5 << 20
_PACKAGE_BYTES_SPAN: Final = 2 << 30


def nal_path(server: str, site_code: str) -> str:
    r"""A DP's NAL path as ConfigMgr writes it: `["Display=\\DP01.x\"]MSWNET:["SMS_SITE=PS1"]\\DP01.x\`."""
    return f'["Display=\\\\{server}\\"]MSWNET:["SMS_SITE={site_code}"]\\\\{server}\\'


def _child_sites(pairs: Iterable[str], dp_count: int) -> dict[str, str]:
    """{"DP04": "S01"} from ("DP04=S01",): DPs of child sites (ValueError for a malformed pair)."""
    sites: dict[str, str] = {}
    for pair in pairs:
        dp, _, site = pair.partition("=")
        dp, site = dp.strip().upper(), site.strip().upper()
        if not (re.fullmatch(r"DP\d{2}", dp) and 1 <= int(dp[2:]) <= dp_count and re.fullmatch(r"[A-Z0-9]{3}", site)):
            raise ValueError(f"dp_child_sites: expected DPnn=SITE (DP01..DP{dp_count:02d}), got {pair!r}")
        sites[dp] = site
    return sites


def build_distribution_points(settings: EmulatorSettings, *, origin: float = 0.0) -> list[DistributionPoint]:
    """DP01..DPnn in the machine's domain, the last `pull_dp_count` pull DPs, faults by short name."""
    if settings.dp_count < 1:
        raise ValueError(f"dp_count must be >= 1, got {settings.dp_count}")
    if not 0 <= settings.pull_dp_count <= settings.dp_count:
        raise ValueError(f"pull_dp_count must be between 0 and dp_count, got {settings.pull_dp_count}")
    domain = settings.machine.split(".", 1)[1] if "." in settings.machine else "lab.local"
    site = settings.site_code.upper()
    first_pull = settings.dp_count - settings.pull_dp_count
    sites = _child_sites(settings.dp_child_sites, settings.dp_count)
    dps = []
    for index in range(settings.dp_count):
        server, dp_site = f"DP{index + 1:02d}.{domain}", sites.get(f"DP{index + 1:02d}", site)
        dps.append(DistributionPoint(index, server, nal_path(server, dp_site), dp_site))
    for dp in dps[first_pull:]:
        dp.pull = True
    by_short = {dp.short_name.upper(): dp for dp in dps}

    def named(names: Iterable[str], what: str) -> Iterator[DistributionPoint]:
        for name in names:
            dp = by_short.get(name.split(".", 1)[0].upper())
            if dp is None:
                raise ValueError(f"{what}: no DP named {name!r} (DP01..DP{settings.dp_count:02d})")
            yield dp

    for dp in named(settings.dp_offline, "dp_offline"):
        dp.offline = True
    for dp in named(settings.dp_failing, "dp_failing"):
        dp.failure_share = settings.dp_failure_share
    for dp in named(settings.dp_scheduled, "dp_scheduled"):
        dp.schedule = Schedule(settings.dp_schedule_period_s, settings.dp_schedule_open_s, origin=origin)
    return dps


def package_bytes(package_id: str) -> int:
    """A package's content size: fixed per PackageID, 5 MB to about 2 GB."""
    return _MIN_PACKAGE_BYTES + zlib.crc32(package_id.encode()) % _PACKAGE_BYTES_SPAN


class ContentStatus:
    """DP rows and jobs of every package, as WMI instances."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._site = settings.site_code.upper()
        self._clock = clock
        self._wall_clock = wall_clock
        self.xfer = PkgXferMgr(
            dps=build_distribution_points(settings, origin=clock()),
            jobs=settings.dp_jobs,
            copy_time_s=settings.dp_copy_time_s,
            pull_copy_factor=settings.pull_dp_copy_factor,
            retry_count=settings.dp_retry_count,
            retry_delay_s=settings.dp_retry_delay_s,
            seed=settings.seed,
            clock=clock,
        )
        self._dp_by_nal = {dp.nal_path.casefold(): dp.index for dp in self.xfer.dps}

    # ---- what the catalogue tells it

    def processed(self, package: Package, old_version: int, at: float) -> None:
        """DistMgr bumped the package's SourceVersion at `at` (model clock): copy it to every DP."""
        self.xfer.submit(
            package.package_id,
            version=package.source_version,
            old_version=old_version,
            total_bytes=package_bytes(package.package_id),
            at=at,
        )

    def replay(self, until: float) -> None:
        self.xfer.replay(until)

    def dp_index(self, server_nal_path: str) -> int | None:
        """The DP a NAL path names (WMI compares string keys case-insensitively)."""
        return self._dp_by_nal.get(server_nal_path.casefold())

    def refresh_now(self, package: Package, dp_index: int) -> None:
        """`SMS_DistributionPoint.RefreshNow = true`: re-send the current version to that DP."""
        self.xfer.redistribute(
            package.package_id, dp_index, version=package.source_version, total_bytes=package_bytes(package.package_id)
        )

    # ---- WQL

    @staticmethod
    def package_key(class_name: str) -> str:
        """The property holding the PackageID (SMS_DistributionJob calls it PkgID)."""
        return _PACKAGE_KEY[class_name]

    def matching(self, class_name: str, where: Expr | None, candidates: Iterable[Package]) -> list[RowKey]:
        """Keys of the class's instances of these packages satisfying a resolved WQL condition."""
        keys: list[RowKey] = []
        for package in candidates:
            for key in self._keys(class_name, package):
                properties = self._properties(class_name, key, package)
                if properties is not None and (where is None or evaluate(where, properties)):
                    keys.append(key)
        return keys

    def render(
        self, class_name: str, keys: Iterable[RowKey], packages: Mapping[str, Package]
    ) -> list[tuple[str, dict[str, Value]]]:
        """(class, current properties) of each key still there, in order (a page to render)."""
        page = []
        for key in keys:
            package = packages.get(key[0])
            properties = None if package is None else self._properties(class_name, key, package)
            if properties is not None:
                page.append((class_name, properties))
        return page

    def _keys(self, class_name: str, package: Package) -> Iterator[RowKey]:
        if class_name == EXTRA_INFO_CLASS:
            yield (package.package_id, -1, 0)
        elif class_name == JOB_CLASS:
            for index, row in sorted(self.xfer.rows(package.package_id).items()):
                if row.job is not None:
                    yield (package.package_id, index, row.job.job_id)
        else:
            for dp in self.xfer.dps:
                yield (package.package_id, dp.index, 0)

    # ---- instances

    def _properties(self, class_name: str, key: RowKey, package: Package) -> dict[str, Value] | None:
        package_id, dp_index, job_id = key
        if class_name == EXTRA_INFO_CLASS:
            return self._extra_info(package)
        dp = self.xfer.dps[dp_index]
        row = self.xfer.rows(package_id).get(dp_index)
        if class_name == JOB_CLASS:
            if row is None or row.job is None or row.job.job_id != job_id:
                return None  # the job completed since the enumeration began
            return self._job(row.job, dp)
        if class_name == DISTRIBUTION_POINT_CLASS:
            return {
                "PackageID": package_id,
                "RefreshNow": False,  # a trigger: it reads back false once the re-send is queued
                "ServerNALPath": dp.nal_path,
                "SiteCode": dp.site_code,
                "SourceSite": package.site_code,
            }
        state, version, copied, changed, message_id, message_state, message_at = self._row_view(row, package)
        if class_name == SUMMARIZER_CLASS:
            return {
                "LastCopied": copied,
                "PackageID": package_id,
                "ServerNALPath": dp.nal_path,
                "SiteCode": dp.site_code,
                "SourceVersion": version,
                "State": state,
                "SummaryDate": changed,
            }
        properties: dict[str, Value] = {f"InsString{n}": None for n in range(1, 11)}
        properties.update(
            {
                "InsString1": package_id,
                "InsString2": dp.name,
                "LastUpdateDate": message_at,
                "MessageID": message_id,
                "MessageSeverity": _SEVERITY_ERROR if message_state == MESSAGE_ERROR else _SEVERITY_INFORMATIONAL,
                "MessageState": message_state,
                "NALPath": dp.nal_path,
                "Name": dp.name,
                "PackageID": package_id,
                "SiteCode": dp.site_code,
            }
        )
        return properties

    def _row_view(self, row: Row | None, package: Package) -> tuple[int, int, datetime, datetime, int, int, datetime]:
        """(State, SourceVersion, LastCopied, SummaryDate, MessageID, MessageState, message time)."""
        if row is None:
            # Never distributed since the model started: installed at the package's version.
            at = package.source_date
            return STATE_INSTALLED, package.source_version, at, at, 2330, MESSAGE_SUCCESS, at
        copied = package.source_date if row.last_copied is None else self._wall(row.last_copied)
        message = row.message
        return (
            row.state,
            row.version,
            copied,
            self._wall(row.changed_at),
            message.message_id,
            message.state,
            self._wall(row.message_at),
        )

    def _job(self, job: Job, dp: DistributionPoint) -> dict[str, Value]:
        return {
            "CreationTime": self._wall(job.created_at),
            "JobID": f"{{{job.job_id:08X}-0000-0000-0000-{zlib.crc32(job.package_id.encode()):012X}}}",
            "LastUpdateTime": self._wall(job.started_at if job.started_at is not None else job.created_at),
            "NALPath": dp.nal_path,
            "PackageVersion": job.version,
            "PkgID": job.package_id,
            "RemainingSize": self.xfer.remaining_bytes(job),
            "RetryCount": job.attempt,
            "State": job.state,
            "TotalSize": job.total_bytes,
        }

    def _extra_info(self, package: Package) -> dict[str, Value]:
        rows = self.xfer.rows(package.package_id)
        counts = {"success": 0, "in_progress": 0, "errors": 0, "unknown": 0}
        latest = package.source_date
        for dp in self.xfer.dps:
            row = rows.get(dp.index)
            state = STATE_INSTALLED if row is None else row.state
            if row is not None:
                latest = max(latest, self._wall(row.changed_at))
            if state == STATE_INSTALLED:
                counts["success"] += 1
            elif state in _IN_PROGRESS_STATES:
                counts["in_progress"] += 1
            elif state == STATE_INSTALL_FAILED:
                counts["errors"] += 1
            else:
                counts["unknown"] += 1
        return {
            "LastUpdateDate": latest,
            "NumberErrors": counts["errors"],
            "NumberInProgress": counts["in_progress"],
            "NumberSuccess": counts["success"],
            "NumberUnknown": counts["unknown"],
            "ObjectID": package.package_id,
            "ObjectType": PACKAGE_CLASSES[package.class_name],
            "PackageID": package.package_id,
            "SoftwareName": package.name,
            "SourceSize": package_bytes(package.package_id) // 1024,
            "Targeted": len(self.xfer.dps),
        }

    def _wall(self, at: float) -> datetime:
        when = datetime.fromtimestamp(self._wall_clock() - (self._clock() - at), tz=UTC)
        return when.replace(microsecond=0)

    # ---- admin

    def snapshot(self, packages: Mapping[str, Package]) -> dict[str, object]:
        """The model's settings and DPs, plus rows by state and the open jobs (counts)."""
        by_state: dict[int, int] = {}
        for package in packages.values():
            rows = self.xfer.rows(package.package_id)
            for dp in self.xfer.dps:
                row = rows.get(dp.index)
                state = STATE_INSTALLED if row is None else row.state
                by_state[state] = by_state.get(state, 0) + 1
        jobs = list(self.xfer.open_jobs())
        return {
            **self.xfer.snapshot(),
            "rows_by_state": {str(state): count for state, count in sorted(by_state.items())},
            "open_jobs": len(jobs),
            "failed_jobs": sum(1 for job in jobs if job.state == JOB_FAILED),
        }

    def package_rows(self, package: Package) -> list[dict[str, object]]:
        """One package's row on every DP (JSON-ready), for the admin API."""
        rows = self.xfer.rows(package.package_id)
        view = []
        for dp in self.xfer.dps:
            state, version, copied, changed, message_id, message_state, _at = self._row_view(
                rows.get(dp.index), package
            )
            view.append(
                {
                    "dp": dp.name,
                    "state": state,
                    "source_version": version,
                    "last_copied": copied.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "summary_date": changed.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "message_id": message_id,
                    "message_state": message_state,
                }
            )
        return view
