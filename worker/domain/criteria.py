"""Bulk selection criteria: what a caller may ask for, turned into WQL by us (never raw WQL).

`BulkCriteria` is strict (no coercion, unknown fields refused) and every value is checked the
way single requests are: site code, package classes from the allow-list, PackageIDs by shape,
`PkgSourceFlag` values from the enum, a name pattern with `*` and `?` wildcards (every other
character literal; at most 256 characters, no control characters).

Classes, by what a refresh does to them (docs/configmgr.md):
* with none named, `SMS_Package` and `SMS_DriverPackage` (DEFAULT_PACKAGE_CLASSES): a refresh
  re-copies their source, nothing more;
* boot images, OS images, OS upgrade packages, software update packages and device settings
  only when named: a boot image's refresh rebuilds the image (minutes each), the others are
  large or serviced on their own schedule;
* `SMS_TaskSequencePackage` only when named with `force` (Microsoft warns the refresh can
  render it inoperable);
* `SMS_ContentPackage` (an application's content) never: refused, with the reason.

`queries(criteria)` yields one WQL per class, built only through worker/domain/wql.py's helpers; with
explicit `package_ids` it yields one per class and chunk of at most `MAX_IDS_PER_QUERY` ids, so no
query string grows with the selection. Exclusions are applied by the enumerator to what the
queries return (`criteria.excludes(package_id)`): a WQL `AND PackageID <> ...` list could not
stay bounded. Explicit ids are fewest queries when the caller also names their class.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from errors import InvalidRequestError
from worker.domain.packages import (
    PACKAGE_CLASSES,
    PACKAGE_ID_PROPERTY,
    REFUSED_CLASSES,
    TASK_SEQUENCE_CLASS,
    PkgSourceFlag,
    validate_package_id,
    validate_refreshable_class,
    validate_site_code,
)
from worker.domain.wql import WqlCondition, equals_any, like_condition, select_query

__all__ = [
    "DEFAULT_PACKAGE_CLASSES",
    "ENUMERATION_PROPERTIES",
    "EXPLICIT_ONLY_CLASSES",
    "MAX_IDS_PER_QUERY",
    "MAX_NAME_PATTERN_CHARS",
    "MAX_PACKAGE_IDS",
    "MAX_QUERY_CHARS",
    "BulkCriteria",
    "ClassQuery",
    "parse_criteria",
    "queries",
]

MAX_PACKAGE_IDS: Final = 50_000
MAX_NAME_PATTERN_CHARS: Final = 256
# 200 ids make ~5,300 characters of `PackageID = '...' OR ...`; with the longest name pattern
# (768 characters once escaped) every query stays under MAX_QUERY_CHARS.
MAX_IDS_PER_QUERY: Final = 200
MAX_QUERY_CHARS: Final = 8192
# What a bulk selects when no class is named: packages whose refresh only re-copies the source.
DEFAULT_PACKAGE_CLASSES: Final = ("SMS_Package", "SMS_DriverPackage")
# Refreshed only when the criteria name them (task sequences: with force too).
EXPLICIT_ONLY_CLASSES: Final = tuple(
    name for name in PACKAGE_CLASSES if name not in DEFAULT_PACKAGE_CLASSES and name not in REFUSED_CLASSES
)
# What a child needs to skip its first Get: the invoke fence's snapshot and the outcome's name.
ENUMERATION_PROPERTIES: Final = (
    "PackageID",
    "Name",
    "PackageType",
    "PkgSourceFlag",
    "SourceVersion",
    "LastRefreshTime",
    "ActionInProgress",
)
_NAME_PROPERTY: Final = "Name"
_FLAG_PROPERTY: Final = "PkgSourceFlag"
_FLAG_VALUES: Final = frozenset(int(flag) for flag in PkgSourceFlag)
_MAX_PROBLEMS_REPORTED: Final = 5
# Unicode categories a name pattern may not hold: controls, surrogates, private use.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Co"})
_T = TypeVar("_T")


class ClassQuery(NamedTuple):
    class_name: str
    wql: str


class BulkCriteria(BaseModel):
    """Which packages of one site a bulk refresh selects (see the module docstring)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    site_code: str
    package_classes: list[str] | None = Field(
        default=None,
        description=(
            "default: SMS_Package and SMS_DriverPackage; other classes only when named "
            "(SMS_TaskSequencePackage with force); SMS_ContentPackage is refused"
        ),
    )
    name_pattern: str | None = Field(default=None, description="`*` any run, `?` one character; case-insensitive")
    pkg_source_flags: list[int] | None = Field(default=None, max_length=len(_FLAG_VALUES))
    package_ids: list[str] | None = Field(default=None, max_length=MAX_PACKAGE_IDS)
    exclude_package_ids: list[str] = Field(default_factory=list, max_length=MAX_PACKAGE_IDS)
    force: bool = Field(default=False, description="allows naming SMS_TaskSequencePackage in package_classes")
    _excluded: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @field_validator("site_code")
    @classmethod
    def _site(cls, value: str) -> str:
        return _as_value_error(validate_site_code, value)

    @field_validator("package_classes")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one class (leave it out for the default set)")
        return _unique(_as_value_error(validate_refreshable_class, name) for name in value)

    @field_validator("name_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_NAME_PATTERN_CHARS:
            raise ValueError(f"must be 1-{MAX_NAME_PATTERN_CHARS} characters")
        for position, ch in enumerate(value):
            if unicodedata.category(ch) in _REFUSED_CATEGORIES or ch in "\ufffe\uffff":
                raise ValueError(f"character {position + 1} (U+{ord(ch):04X}) is not allowed in a name pattern")
        return value

    @field_validator("pkg_source_flags")
    @classmethod
    def _flags(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one PkgSourceFlag value (leave it out for any)")
        for flag in value:
            if flag not in _FLAG_VALUES:
                raise ValueError(
                    f"{flag!r:.20} is not a PkgSourceFlag value ({', '.join(map(str, sorted(_FLAG_VALUES)))})"
                )
        return sorted(set(value))

    @field_validator("package_ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one PackageID (leave it out to select by the other criteria)")
        return _unique(_as_value_error(validate_package_id, package_id) for package_id in value)

    @field_validator("exclude_package_ids")
    @classmethod
    def _excluded_ids(cls, value: list[str]) -> list[str]:
        return _unique(_as_value_error(validate_package_id, package_id) for package_id in value)

    @model_validator(mode="after")
    def _task_sequences_need_force(self) -> BulkCriteria:
        if TASK_SEQUENCE_CLASS in (self.package_classes or ()) and not self.force:
            raise ValueError(
                f"{TASK_SEQUENCE_CLASS} needs force=true (Microsoft warns a refresh can render it inoperable)"
            )
        self._excluded = frozenset(self.exclude_package_ids)
        return self

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes to enumerate, canonical and without repeats."""
        return tuple(self.package_classes) if self.package_classes is not None else DEFAULT_PACKAGE_CLASSES

    def excludes(self, package_id: str) -> bool:
        """True when the enumerator must skip this package (ids compare case-insensitively)."""
        return isinstance(package_id, str) and package_id.upper() in self._excluded


def parse_criteria(data: Mapping[str, Any]) -> BulkCriteria:
    """Validate caller-supplied criteria (JSON-decoded); every problem is one InvalidRequestError."""
    if not isinstance(data, Mapping):
        raise InvalidRequestError("invalid bulk criteria: expected a JSON object")
    try:
        return BulkCriteria.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        problems = [f"{_location(err['loc'])}: {_short_msg(err)}" for err in errors[:_MAX_PROBLEMS_REPORTED]]
        if len(errors) > _MAX_PROBLEMS_REPORTED:
            problems.append(f"and {len(errors) - _MAX_PROBLEMS_REPORTED} more")
        raise InvalidRequestError(f"invalid bulk criteria: {'; '.join(problems)}") from None


def queries(
    criteria: BulkCriteria,
    *,
    properties: Sequence[str] = ENUMERATION_PROPERTIES,
    ids_per_query: int = MAX_IDS_PER_QUERY,
) -> Iterator[ClassQuery]:
    """One WQL per class (and per chunk of explicit ids), built only from validated parts."""
    if not 1 <= ids_per_query <= MAX_IDS_PER_QUERY:
        raise ValueError(f"ids_per_query must be in [1, {MAX_IDS_PER_QUERY}]")
    common: list[WqlCondition] = []
    if criteria.pkg_source_flags is not None:
        common.append(equals_any(_FLAG_PROPERTY, criteria.pkg_source_flags))
    if criteria.name_pattern is not None:
        common.append(like_condition(_NAME_PROPERTY, criteria.name_pattern))
    wanted = None
    if criteria.package_ids is not None:
        wanted = [package_id for package_id in criteria.package_ids if not criteria.excludes(package_id)]
    for class_name in criteria.classes:
        if wanted is None:
            yield _bounded(class_name, select_query(class_name, properties, common))
            continue
        for start in range(0, len(wanted), ids_per_query):
            chunk = wanted[start : start + ids_per_query]
            conditions = [*common, equals_any(PACKAGE_ID_PROPERTY, chunk)]
            yield _bounded(class_name, select_query(class_name, properties, conditions))


def _bounded(class_name: str, wql: str) -> ClassQuery:
    # Validated criteria cannot get here (see MAX_IDS_PER_QUERY); a guard, not a code path.
    if len(wql) > MAX_QUERY_CHARS:
        raise InvalidRequestError(f"a bulk query would exceed {MAX_QUERY_CHARS} characters")
    return ClassQuery(class_name, wql)


def _unique(values: Iterator[_T]) -> list[_T]:
    return list(dict.fromkeys(values))


def _as_value_error(normalize: Callable[[object], str], value: object) -> str:
    try:
        return normalize(value)
    except InvalidRequestError as exc:
        raise ValueError(exc.message) from None


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "criteria"


def _short_msg(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    return str(err["msg"]).removeprefix("Value error, ")
