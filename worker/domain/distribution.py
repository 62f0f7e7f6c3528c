"""Content on distribution points as the SMS Provider reports it: queries out, rows in (pure).

`SMS_PackageStatusDistPointsSummarizer` holds one row per package x distribution point (DP):
the DP's NAL path, the version it holds (`SourceVersion`) and its `State`. The worker reads it
for many packages at once (`PackageID = 'A' OR ...`, at most MAX_PACKAGES_PER_QUERY per query)
and, to name the last status message of a DP, `SMS_DistributionDPStatus`; between full reads,
the per-package rollup `SMS_ObjectContentExtraInfo` is the cheap poll; `SMS_PackageBaseclass` gives
many packages' SourceVersion in one query (following waits for it to pass V0). docs/configmgr.md
("Following content to every DP") has the classes, the states and the traps.

The provider's rows are untrusted input. A row is refused (counted, never raised) when it lacks
PackageID, the NAL path, State or SourceVersion, names a package the query did not ask for,
carries an array where one value belongs, a number out of range, or a NAL path that is too long,
holds control characters or names no server. A State the SDK does not list is kept as
`state=None` with its raw value (the caller counts it as unknown, never as done). A reader stops
at a bound on rows (`truncated`: reached, the rest unread), so a provider answering millions of
rows costs a bounded amount of memory; the client stops pulling there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Generic, TypeVar

from errors import InvalidRequestError
from worker.domain.packages import PACKAGE_ID_PROPERTY, safe_repr, validate_package_id, validate_site_code
from worker.domain.wql import wql_string_literal
from worker.wsman import WmiInstance, resource_uri

__all__ = [
    "CONTENT_COUNTS_CLASS",
    "DEFAULT_MAX_ROWS",
    "DISTRIBUTION_POINT_CLASS",
    "DP_MESSAGE_CLASS",
    "MAX_NAL_PATH_CHARS",
    "MAX_PACKAGES_PER_QUERY",
    "PACKAGE_BASE_CLASS",
    "SUMMARIZER_CLASS",
    "ContentCounts",
    "ContentCountsReader",
    "DpMessage",
    "DpMessageReader",
    "DpState",
    "DpStatusBatch",
    "DpStatusReader",
    "DpStatusRow",
    "PackageVersion",
    "SourceVersionReader",
    "content_counts_query",
    "distribution_point_uri",
    "dp_message_query",
    "dp_name_from_nal",
    "dp_state",
    "dp_status_query",
    "merge_batches",
    "package_chunks",
    "source_version_query",
    "unsettled_dp_status_query",
    "validate_nal_path",
]

SUMMARIZER_CLASS: Final = "SMS_PackageStatusDistPointsSummarizer"
DP_MESSAGE_CLASS: Final = "SMS_DistributionDPStatus"
CONTENT_COUNTS_CLASS: Final = "SMS_ObjectContentExtraInfo"
DISTRIBUTION_POINT_CLASS: Final = "SMS_DistributionPoint"
PACKAGE_BASE_CLASS: Final = "SMS_PackageBaseclass"  # abstract: a query on it answers every package class
# A WQL query with 200 `PackageID = '...'` clauses is about 6 KB: well inside what WMI takes,
# and 200 packages x 10 DPs is 2,000 rows, 20 pulls of 100.
MAX_PACKAGES_PER_QUERY: Final = 200
MAX_NAL_PATH_CHARS: Final = 512
# Rows one read keeps at most: 200 packages x 250 DPs. A provider answering more is cut there.
DEFAULT_MAX_ROWS: Final = 50_000
_MAX_UINT32: Final = 0xFFFFFFFF
_MAX_PROBLEMS: Final = 5
_MAX_TEXT_CHARS: Final = 64  # dates and site codes: longer is not a CIM datetime nor a site code

_SUMMARY_PROPERTIES: Final = ("PackageID", "ServerNALPath", "SiteCode", "SourceVersion", "State", "LastCopied")
_MESSAGE_PROPERTIES: Final = ("PackageID", "NALPath", "MessageID", "MessageState", "LastUpdateDate")
_VERSION_PROPERTIES: Final = ("PackageID", "SourceVersion")
_COUNT_PROPERTIES: Final = (
    "PackageID",
    "Targeted",
    "NumberSuccess",
    "NumberInProgress",
    "NumberErrors",
    "NumberUnknown",
)
# `\\SERVER\` at the end of a NAL path (after `]MSWNET:["SMS_SITE=..."]`), or its Display= part.
_SERVER_RE: Final = re.compile(r"\\\\([A-Za-z0-9][A-Za-z0-9.\-_]{0,254})\\?\Z")
_DISPLAY_RE: Final = re.compile(r'\A\["Display=\\\\([A-Za-z0-9][A-Za-z0-9.\-_]{0,254})\\?"\]')
# XML 1.0 cannot carry these even escaped; NAL paths never hold them.
_FORBIDDEN_RE: Final = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


class DpState(IntEnum):
    """`SMS_PackageStatusDistPointsSummarizer.State` (Microsoft's SDK page of the class)."""

    INSTALLED = 0
    INSTALL_PENDING = 1
    INSTALL_RETRYING = 2
    INSTALL_FAILED = 3
    REMOVAL_PENDING = 4
    REMOVAL_RETRYING = 5
    REMOVAL_FAILED = 6
    CONTENT_UPDATING = 7
    CONTENT_MONITORING = 8


_LEAVING: Final = frozenset({DpState.REMOVAL_PENDING, DpState.REMOVAL_RETRYING, DpState.REMOVAL_FAILED})
_KNOWN_STATES: Final = {int(state): state for state in DpState}


def dp_state(raw_state: int) -> DpState | None:
    """The State the SDK lists for this value, or None (unknown: never counted as done)."""
    return _KNOWN_STATES.get(raw_state)


def validate_nal_path(value: object) -> str:
    """A DP's NAL path fit to go into a selector or a WQL literal; InvalidRequestError otherwise.

    Quotes, brackets and backslashes are normal (`["Display=\\\\DP01\\"]MSWNET:[...]\\\\DP01\\`):
    the envelope builder XML-escapes them and `wql_string_literal` backslash-escapes them.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_NAL_PATH_CHARS:
        raise InvalidRequestError(f"invalid NAL path {safe_repr(value)}: expected 1-{MAX_NAL_PATH_CHARS} characters")
    if _FORBIDDEN_RE.search(value):
        raise InvalidRequestError(f"invalid NAL path {safe_repr(value)}: control characters")
    if dp_name_from_nal(value) is None:
        raise InvalidRequestError(f"invalid NAL path {safe_repr(value)}: names no server")
    return value


def dp_name_from_nal(nal_path: str) -> str | None:
    """The DP's server name a NAL path ends with (or its Display= part names); None if neither."""
    if len(nal_path) > MAX_NAL_PATH_CHARS or _FORBIDDEN_RE.search(nal_path):
        return None
    match = _SERVER_RE.search(nal_path) or _DISPLAY_RE.search(nal_path)
    return match.group(1) if match else None


def distribution_point_uri(site_code: str) -> str:
    """The resource URI of `SMS_DistributionPoint` at a site (a Put of RefreshNow goes there)."""
    return resource_uri(validate_site_code(site_code), DISTRIBUTION_POINT_CLASS)


def package_chunks(package_ids: Iterable[str], size: int = MAX_PACKAGES_PER_QUERY) -> list[list[str]]:
    """Validated, upper-cased, de-duplicated PackageIDs in chunks of at most `size` (first seen first)."""
    if not 1 <= size <= MAX_PACKAGES_PER_QUERY:
        raise InvalidRequestError(f"chunk size must be 1-{MAX_PACKAGES_PER_QUERY}, got {safe_repr(size)}")
    unique = list(dict.fromkeys(validate_package_id(package_id) for package_id in package_ids))
    return [unique[start : start + size] for start in range(0, len(unique), size)]


def _query(class_name: str, properties: Sequence[str], package_ids: Sequence[str]) -> str:
    ids = _query_ids(package_ids)
    clauses = " OR ".join(f"{PACKAGE_ID_PROPERTY} = {wql_string_literal(pid)}" for pid in ids)
    # Class and property names are this module's constants; every literal is validated and escaped.
    return f"SELECT {', '.join(properties)} FROM {class_name} WHERE {clauses}"  # noqa: S608 - WQL, not SQL


def _query_ids(package_ids: Iterable[str]) -> list[str]:
    ids = [validate_package_id(package_id) for package_id in package_ids]
    if not 1 <= len(ids) <= MAX_PACKAGES_PER_QUERY:
        raise InvalidRequestError(f"a DP status query takes 1-{MAX_PACKAGES_PER_QUERY} PackageIDs, got {len(ids)}")
    return ids


def dp_status_query(package_ids: Sequence[str]) -> str:
    """`SELECT ... FROM SMS_PackageStatusDistPointsSummarizer WHERE PackageID = 'A' OR ...`."""
    return _query(SUMMARIZER_CLASS, _SUMMARY_PROPERTIES, package_ids)


def unsettled_dp_status_query(settled_at: Mapping[str, int]) -> str:
    """The rows of these packages that are not settled at the given version:
    `... WHERE (PackageID = 'A' AND (State <> 0 OR SourceVersion < 5)) OR ...`.

    A row left out is installed (State 0) at that SourceVersion or later: once every DP of a
    package has the new version the read returns nothing for it, so a package done costs no rows.
    """
    versions = {validate_package_id(pid): version for pid, version in settled_at.items()}
    for version in versions.values():
        if isinstance(version, bool) or not isinstance(version, int) or not 0 < version <= _MAX_UINT32:
            raise InvalidRequestError(f"a settled version must be 1-{_MAX_UINT32}, got {safe_repr(version)}")
    ids = _query_ids(versions)
    clauses = " OR ".join(
        f"({PACKAGE_ID_PROPERTY} = {wql_string_literal(pid)} AND (State <> {int(DpState.INSTALLED)}"
        f" OR SourceVersion < {versions[pid]}))"
        for pid in ids
    )
    return f"SELECT {', '.join(_SUMMARY_PROPERTIES)} FROM {SUMMARIZER_CLASS} WHERE {clauses}"  # noqa: S608 - WQL


def content_counts_query(package_ids: Sequence[str]) -> str:
    """Per package, how many DPs are targeted, done, in progress, failed (`SMS_ObjectContentExtraInfo`)."""
    return _query(CONTENT_COUNTS_CLASS, _COUNT_PROPERTIES, package_ids)


def source_version_query(package_ids: Sequence[str]) -> str:
    """Each package's own SourceVersion (`SMS_PackageBaseclass`): one row per package, whatever its class."""
    return _query(PACKAGE_BASE_CLASS, _VERSION_PROPERTIES, package_ids)


def dp_message_query(package_ids: Sequence[str]) -> str:
    """The last status message per package x DP (`SMS_DistributionDPStatus`) for these packages."""
    return _query(DP_MESSAGE_CLASS, _MESSAGE_PROPERTIES, package_ids)


@dataclass(frozen=True)
class DpStatusRow:
    """One package on one DP, typed and checked."""

    package_id: str
    nal_path: str
    dp_name: str
    state: DpState | None  # None: a value the SDK does not list (see raw_state)
    raw_state: int
    source_version: int
    site_code: str | None = None
    last_copied: str | None = None

    @property
    def leaving(self) -> bool:
        """Being removed from the DP (States 4-6): not a target of a refresh."""
        return self.state in _LEAVING

    def installed_at(self, version: int) -> bool:
        """State 0 with `version` or later: a row at the old version in State 0 is not done."""
        return self.state is DpState.INSTALLED and self.source_version >= version


@dataclass(frozen=True)
class DpMessage:
    """A DP's last status message for a package (`SMS_DistributionDPStatus`)."""

    package_id: str
    nal_path: str
    message_id: int
    message_state: int  # 1 success, 2 in progress, 3 (and 4, as some tools read it) error
    last_update: str | None = None


@dataclass(frozen=True)
class ContentCounts:
    """A package's rollup over its DPs (`SMS_ObjectContentExtraInfo`): one row per package.

    Cheap to poll, but blind to versions: a DP still at the old version in State 0 counts as a
    success, so it says "something changed", never "distributed".
    """

    package_id: str
    targeted: int
    success: int
    in_progress: int
    errors: int
    unknown: int


@dataclass(frozen=True)
class PackageVersion:
    """A package's SourceVersion as the site reads it (`SMS_PackageBaseclass`)."""

    package_id: str
    source_version: int


@dataclass(frozen=True)
class DpStatusBatch:
    """What a read brought back: the rows kept and what was refused or left unread."""

    rows: tuple[DpStatusRow, ...] = ()
    messages: tuple[DpMessage, ...] = ()
    counts: tuple[ContentCounts, ...] = ()
    rejected: int = 0
    duplicates: int = 0
    truncated: bool = False
    problems: tuple[str, ...] = ()  # the first few reasons rows were refused, for a log line
    versions: tuple[PackageVersion, ...] = ()
    # Set on a filtered read (`unsettled_dp_status_query`): a row not listed is installed at this
    # SourceVersion or later. None: every row of the package is listed.
    settled_at: int | None = None


_Item = TypeVar("_Item", "DpStatusRow", "DpMessage", "ContentCounts", "PackageVersion")


class _RowRefusedError(ValueError):
    """A row the reader refuses (the message says why; never raised past the reader)."""


class _Reader(Generic[_Item]):
    """Checks instances one by one and keeps up to `max_rows` (`add` is False once full)."""

    nal_property: str | None = "ServerNALPath"  # None: one row per package, no DP

    def __init__(self, requested: Iterable[str], *, max_rows: int) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise InvalidRequestError(f"max_rows must be an integer >= 1, got {safe_repr(max_rows)}")
        self._requested = frozenset(validate_package_id(p) for p in requested)
        self._max_rows = max_rows
        self._items: list[_Item] = []
        self._seen: set[tuple[str, str]] = set()
        self._rejected = 0
        self._duplicates = 0
        self._truncated = False
        self._problems: list[str] = []

    def add(self, instance: WmiInstance) -> bool:
        """Read one instance; False once the bound is reached: stop reading (`truncated`: the rest,
        if there is any, is unread; no Pull is spent to find out)."""
        if len(self._items) >= self._max_rows:
            self._truncated = True
            return False
        try:
            key = self._key(instance)
            item = self._item(key, instance)
        except _RowRefusedError as problem:
            self._rejected += 1
            if len(self._problems) < _MAX_PROBLEMS:
                self._problems.append(str(problem))
            return True
        if key in self._seen:
            self._duplicates += 1
        else:
            self._seen.add(key)
            self._items.append(item)
        if len(self._items) >= self._max_rows:
            self._truncated = True
            return False
        return True

    def _counts(self) -> dict[str, Any]:
        return {
            "rejected": self._rejected,
            "duplicates": self._duplicates,
            "truncated": self._truncated,
            "problems": tuple(self._problems),
        }

    def _key(self, instance: WmiInstance) -> tuple[str, str]:
        package_id = _text(instance, PACKAGE_ID_PROPERTY, required=True)
        try:
            package_id = validate_package_id(package_id)
        except InvalidRequestError:
            raise _RowRefusedError(f"PackageID {safe_repr(package_id)} is not one") from None
        if package_id not in self._requested:
            raise _RowRefusedError(f"PackageID {package_id} was not asked for")
        if self.nal_property is None:
            return package_id, ""
        nal_path = _text(instance, self.nal_property, required=True, limit=MAX_NAL_PATH_CHARS)
        try:
            validate_nal_path(nal_path)
        except InvalidRequestError as exc:
            raise _RowRefusedError(exc.message) from None
        return package_id, nal_path

    def _item(self, key: tuple[str, str], instance: WmiInstance) -> _Item:
        raise NotImplementedError


class DpStatusReader(_Reader[DpStatusRow]):
    """`SMS_PackageStatusDistPointsSummarizer` rows of the packages asked for."""

    def _item(self, key: tuple[str, str], instance: WmiInstance) -> DpStatusRow:
        raw_state = _uint(instance, "State")
        return DpStatusRow(
            package_id=key[0],
            nal_path=key[1],
            dp_name=dp_name_from_nal(key[1]) or "",
            state=dp_state(raw_state),
            raw_state=raw_state,
            source_version=_uint(instance, "SourceVersion"),
            site_code=_text(instance, "SiteCode") or None,
            last_copied=_text(instance, "LastCopied") or None,
        )

    def result(self) -> DpStatusBatch:
        return DpStatusBatch(rows=tuple(self._items), **self._counts())


class DpMessageReader(_Reader[DpMessage]):
    """`SMS_DistributionDPStatus` rows of the packages asked for."""

    nal_property = "NALPath"

    def _item(self, key: tuple[str, str], instance: WmiInstance) -> DpMessage:
        return DpMessage(
            package_id=key[0],
            nal_path=key[1],
            message_id=_uint(instance, "MessageID"),
            message_state=_uint(instance, "MessageState"),
            last_update=_text(instance, "LastUpdateDate") or None,
        )

    def result(self) -> DpStatusBatch:
        return DpStatusBatch(messages=tuple(self._items), **self._counts())


class ContentCountsReader(_Reader[ContentCounts]):
    """`SMS_ObjectContentExtraInfo` rows of the packages asked for (one per package)."""

    nal_property = None

    def _item(self, key: tuple[str, str], instance: WmiInstance) -> ContentCounts:
        return ContentCounts(
            package_id=key[0],
            targeted=_uint(instance, "Targeted"),
            success=_uint(instance, "NumberSuccess"),
            in_progress=_uint(instance, "NumberInProgress"),
            errors=_uint(instance, "NumberErrors"),
            unknown=_uint(instance, "NumberUnknown"),
        )

    def result(self) -> DpStatusBatch:
        return DpStatusBatch(counts=tuple(self._items), **self._counts())


class SourceVersionReader(_Reader[PackageVersion]):
    """`SMS_PackageBaseclass` rows (PackageID, SourceVersion) of the packages asked for (one per package)."""

    nal_property = None

    def _item(self, key: tuple[str, str], instance: WmiInstance) -> PackageVersion:
        return PackageVersion(package_id=key[0], source_version=_uint(instance, "SourceVersion"))

    def result(self) -> DpStatusBatch:
        return DpStatusBatch(versions=tuple(self._items), **self._counts())


def _text(instance: WmiInstance, name: str, *, required: bool = False, limit: int = _MAX_TEXT_CHARS) -> str:
    value = instance.get(name)
    if isinstance(value, list):
        raise _RowRefusedError(f"{name} is an array")
    if value is None or not value.strip():
        if required:
            raise _RowRefusedError(f"{name} is missing")
        return ""
    if len(value) > limit or _FORBIDDEN_RE.search(value):
        raise _RowRefusedError(f"{name} is {safe_repr(value)}: too long or control characters")
    return value.strip()


def _uint(instance: WmiInstance, name: str) -> int:
    text = _text(instance, name, required=True)
    if not text.isdigit() or not text.isascii():
        raise _RowRefusedError(f"{name} is {safe_repr(text)}, not an unsigned integer")
    number = int(text)
    if number > _MAX_UINT32:
        raise _RowRefusedError(f"{name} is {number}, past uint32")
    return number


def merge_batches(batches: Iterable[DpStatusBatch]) -> DpStatusBatch:
    """One batch from several (one per chunk): rows in order, counters summed, problems bounded."""
    rows: list[DpStatusRow] = []
    messages: list[DpMessage] = []
    counts: list[ContentCounts] = []
    versions: list[PackageVersion] = []
    rejected = duplicates = 0
    truncated = False
    problems: list[str] = []
    for batch in batches:
        rows.extend(batch.rows)
        messages.extend(batch.messages)
        counts.extend(batch.counts)
        versions.extend(batch.versions)
        rejected += batch.rejected
        duplicates += batch.duplicates
        truncated = truncated or batch.truncated
        problems.extend(batch.problems[: _MAX_PROBLEMS - len(problems)])
    return DpStatusBatch(
        tuple(rows), tuple(messages), tuple(counts), rejected, duplicates, truncated, tuple(problems), tuple(versions)
    )
