"""WQL evaluation against one instance, and the PackageID values a condition pins (for an index).

String comparisons and LIKE ignore case, like WMI's; a comparison with a null property value
is false; constants are brought to the property's type as WMI does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from emulator.sms.wql import And, CompareOp, Comparison, Expr, IsNull, Like, Not, Or, Value, parse_int

__all__ = ["equality_keys", "evaluate", "pins_only"]

# --------------------------------------------------------------------------- evaluation

_DMTF_RE: Final = re.compile(r"^(\d{14})\.(\d{6})([+-])(\d{3})$")


def _parse_datetime(text: str) -> datetime | None:
    """A WQL datetime constant: DMTF (`20261123100000.000000+000`) or ISO 8601."""
    match = _DMTF_RE.match(text.strip())
    if match:
        minutes = int(match.group(4)) * (1 if match.group(3) == "+" else -1)
        base = datetime.strptime(match.group(1), "%Y%m%d%H%M%S")
        tz = timezone(timedelta(minutes=minutes))
        return base.replace(microsecond=int(match.group(2)), tzinfo=tz)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _coerce(  # noqa: PLR0911 - one return per property type
    actual: int | str | bool | datetime, literal: int | str | bool
) -> tuple[object, object] | None:
    """Bring a constant to the property's type, as WMI does; None when they cannot compare."""
    if isinstance(actual, bool):
        if isinstance(literal, str):
            lowered = literal.strip().lower()
            if lowered not in ("true", "false"):
                return None
            return actual, lowered == "true"
        return actual, bool(literal)
    if isinstance(actual, int):
        if isinstance(literal, str):
            try:
                return actual, parse_int(literal)
            except ValueError:
                return None
        return actual, int(literal)
    if isinstance(actual, datetime):
        parsed = _parse_datetime(str(literal)) if isinstance(literal, str) else None
        return None if parsed is None else (actual, parsed)
    return actual.casefold(), str(literal).casefold()


def _compare(op: CompareOp, left: object, right: object) -> bool:
    # Both sides were coerced to one type by _coerce, so ordering is defined.
    if op == "=":
        return left == right
    if op == "<>":
        return left != right
    if op == "<":
        return bool(left < right)  # type: ignore[operator]
    if op == ">":
        return bool(left > right)  # type: ignore[operator]
    if op == "<=":
        return bool(left <= right)  # type: ignore[operator]
    return bool(left >= right)  # type: ignore[operator]


@functools.lru_cache(maxsize=256)
def _like_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        elif ch == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negated = body.startswith("^")
            body = body[1:] if negated else body
            escaped = "".join("\\" + c if c in "\\]^[" else c for c in body)
            parts.append(f"[{'^' if negated else ''}{escaped}]" if body else re.escape(pattern[i : end + 1]))
            i = end
        else:
            parts.append(re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _as_text(value: int | str | bool | datetime) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d%H%M%S.%f+000")
    return str(value)


def evaluate(expr: Expr | None, instance: Mapping[str, Value]) -> bool:  # noqa: PLR0911 - one return per node
    """Whether an instance (canonical property names) satisfies a resolved condition."""
    if expr is None:
        return True
    if isinstance(expr, Comparison):
        actual = instance.get(expr.prop)
        if actual is None:
            return False
        coerced = _coerce(actual, expr.value)
        return coerced is not None and _compare(expr.op, *coerced)
    if isinstance(expr, Like):
        actual = instance.get(expr.prop)
        if actual is None:
            return False
        matched = _like_regex(expr.pattern).fullmatch(_as_text(actual)) is not None
        return matched != expr.negated
    if isinstance(expr, IsNull):
        return (instance.get(expr.prop) is None) != expr.negated
    if isinstance(expr, Not):
        return not evaluate(expr.item, instance)
    if isinstance(expr, And):
        return all(evaluate(item, instance) for item in expr.items)
    return any(evaluate(item, instance) for item in expr.items)


def equality_keys(expr: Expr | None, prop: str) -> frozenset[str] | None:
    """Casefolded values `prop` must equal for `expr` to hold, or None when it is not pinned.

    `P = 'a'` pins {'a'}; an OR pins the union when every branch is pinned; an AND pins what
    its pinned items share. Anything else (NOT, LIKE, ranges, other properties) pins nothing.
    A string property compares casefolded to `str(literal)` (see _coerce), hence the keys.
    """
    if isinstance(expr, Comparison):
        if expr.prop == prop and expr.op == "=":
            return frozenset({str(expr.value).casefold()})
        return None
    if isinstance(expr, Or):
        keys: set[str] = set()
        for item in expr.items:
            item_keys = equality_keys(item, prop)
            if item_keys is None:
                return None
            keys |= item_keys
        return frozenset(keys)
    if isinstance(expr, And):
        pinned = [keys for keys in (equality_keys(item, prop) for item in expr.items) if keys is not None]
        return frozenset.intersection(*pinned) if pinned else None
    return None


def pins_only(expr: Expr | None, prop: str) -> bool:
    """True when `expr` is nothing but `prop = ...` equalities ORed together: the instances of the
    packages `equality_keys` found satisfy it, with nothing left to evaluate."""
    if isinstance(expr, Comparison):
        return expr.prop == prop and expr.op == "="
    if isinstance(expr, Or):
        return all(pins_only(item, prop) for item in expr.items)
    return False
