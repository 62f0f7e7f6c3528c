"""WQL built from validated parts: the only place sccm-refresh writes a query string.

WQL escapes with a backslash inside quoted literals; control characters are refused outright.
Class names come from the allow-list in `worker.packages`, property names and PackageIDs are
checked by pattern, and every literal goes through `wql_string_literal`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from worker.errors import InvalidRequestError
from worker.packages import PACKAGE_ID_PROPERTY, safe_repr, validate_package_class, validate_package_id

__all__ = ["package_query", "wql_string_literal"]

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
