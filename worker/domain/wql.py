"""WQL built from validated parts: the only place sccm-refresh writes a query string.

WQL escapes with a backslash inside quoted literals; control characters are refused outright.
Class names come from the allow-list in `worker.domain.packages`, property names and PackageIDs are
checked by pattern, and every literal goes through `wql_string_literal`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from errors import InvalidRequestError
from worker.domain.packages import PACKAGE_ID_PROPERTY, safe_repr, validate_package_class, validate_package_id

__all__ = [
    "WqlCondition",
    "equals_any",
    "like_condition",
    "package_query",
    "select_query",
    "wildcard_to_like",
    "wql_string_literal",
]

_PROPERTY_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# XML 1.0 cannot carry C0 controls other than tab/CR/LF even escaped, and WQL has no use for them.
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")


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


# -- conditions, for queries with more than PackageID in their WHERE clause --------------------

# WMI's LIKE: % any run, _ one character, [set] / [^set] one character of (not of) a set. Each of
# these three characters is made literal by putting it in a one-character set.
_LIKE_LITERALS = {"%": "[%]", "_": "[_]", "[": "[[]"}
_WILDCARDS = {"*": "%", "?": "_"}


@dataclass(frozen=True)
class WqlCondition:
    """One WHERE condition, made only by the helpers below from validated, escaped parts."""

    text: str


def wildcard_to_like(pattern: str) -> str:
    """A `*`/`?` wildcard pattern as a WQL LIKE pattern in which every other character is literal."""
    if not isinstance(pattern, str):
        raise InvalidRequestError(f"pattern {safe_repr(pattern)} is not a string")
    return "".join(_WILDCARDS.get(ch) or _LIKE_LITERALS.get(ch) or ch for ch in pattern)


def like_condition(property_name: str, wildcard_pattern: str) -> WqlCondition:
    """`<property> LIKE '<pattern>'` for a `*`/`?` wildcard pattern (matching ignores case in WMI)."""
    prop = _validate_property_name(property_name)
    return WqlCondition(f"{prop} LIKE {wql_string_literal(wildcard_to_like(wildcard_pattern))}")


def equals_any(property_name: str, values: Sequence[str | int]) -> WqlCondition:
    """`(<property> = v1 OR <property> = v2 ...)`: strings as escaped literals, integers as numbers."""
    prop = _validate_property_name(property_name)
    if not values:
        raise InvalidRequestError(f"a condition on {prop} needs at least one value")
    literals = [_literal(value) for value in values]
    return WqlCondition("(" + " OR ".join(f"{prop} = {literal}" for literal in literals) + ")")


def select_query(
    class_name: str, properties: Iterable[str] | None = None, conditions: Sequence[WqlCondition] = ()
) -> str:
    """`SELECT <properties|*> FROM <class> [WHERE c1 AND c2 ...]`, from an allowed class and helper-made conditions."""
    cls = validate_package_class(class_name)
    columns = [_validate_property_name(name) for name in properties] if properties is not None else []
    for condition in conditions:
        if not isinstance(condition, WqlCondition):
            raise InvalidRequestError("WQL conditions must be built by worker.domain.wql helpers")
    # Class from the allow-list, columns by regex, conditions only from the helpers above.
    query = f"SELECT {', '.join(columns) if columns else '*'} FROM {cls}"  # noqa: S608
    if not conditions:
        return query
    return f"{query} WHERE {' AND '.join(condition.text for condition in conditions)}"


def _literal(value: str | int) -> str:
    if isinstance(value, bool):
        raise InvalidRequestError(f"value {safe_repr(value)} is not a WQL string or integer")
    if isinstance(value, int):
        return str(value)
    return wql_string_literal(value)
