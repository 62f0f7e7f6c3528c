"""Which DPs hold a bulk's packages back: marks from one child's distribution block, the report (pure).

A bulk followed to every DP (`until=distributed`) keeps one rollup per bulk: for each DP, how many
of its packages that DP has not got yet, by row status. Each child contributes its latest
distribution block (its `distributing` events, then its final), replacing what it contributed
before, so the rollup is what the children say now: a child still copying counts where it is, a
child that ended counts where its final left it.

    marks = straggler_marks(outcome.distribution)     # (("failed|DP02", 1), ("~unlisted", 2))
    report = stragglers_report(...)                    # the JSON of GET .../stragglers

Mark fields: `<status>|<dp>` for a listed target row that is not done (`waiting`, `retrying`,
`failed`, `unknown`); `~source` for a package whose SourceVersion never passed V0 (phase `source`:
the site server holds it back, not a DP, so no DP is named); `~unlisted` for straggler rows the
block did not list (it lists at most `FOLLOW__MAX_DP_ROWS`, stragglers first) or that name no server.
DP names come from the NAL path (`[A-Za-z0-9.-_]`), so a field never holds `|`, a space or `~`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "HELD_AT_SOURCE",
    "STRAGGLER_STATUSES",
    "UNLISTED",
    "DpStragglers",
    "StragglerMarks",
    "decode_marks",
    "encode_marks",
    "straggler_marks",
    "stragglers_report",
]

# Row statuses that hold a package back (docs/outcomes.md, "The distribution block"): `waiting`
# is content in flight (queued, copying, validating), the others are what their names say.
STRAGGLER_STATUSES: Final = ("waiting", "retrying", "failed", "unknown")
HELD_AT_SOURCE: Final = "~source"
UNLISTED: Final = "~unlisted"
_DP_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]{0,254}")
_MAX_COUNT: Final = 1_000_000

StragglerMarks = tuple[tuple[str, int], ...]


def straggler_marks(block: Mapping[str, Any] | None) -> StragglerMarks:
    """What one child's distribution block says holds its package back (empty: nothing, or no block)."""
    if not block:
        return ()
    if block.get("phase") == "source":
        return ((HELD_AT_SOURCE, 1),)
    marks: Counter[str] = Counter()
    listed = 0
    for row in block.get("dps") or ():
        status = row.get("status") if isinstance(row, Mapping) else None
        if status not in STRAGGLER_STATUSES:
            continue
        listed += 1
        dp = row.get("dp")
        if isinstance(dp, str) and _DP_RE.fullmatch(dp):
            marks[f"{status}|{dp.upper()}"] += 1  # DP names are case-insensitive (NetBIOS, DNS)
    counts = block.get("counts") or {}
    in_counts = sum(int(counts.get(status) or 0) for status in STRAGGLER_STATUSES)
    # Rows not listed, or listed without a server name: counted, unnamed.
    unnamed = max(in_counts - listed, 0) + (listed - sum(marks.values()))
    if unnamed:
        marks[UNLISTED] += min(unnamed, _MAX_COUNT)
    return tuple(sorted(marks.items()))


def encode_marks(marks: StragglerMarks) -> list[str]:
    """Flat `[field, n, field, n, ...]` for the store's script."""
    return [item for field, count in marks for item in (field, str(int(count)))]


def decode_marks(flat: Sequence[str]) -> StragglerMarks:
    return tuple((str(flat[i]), int(flat[i + 1])) for i in range(0, len(flat) - 1, 2))


@dataclass(frozen=True)
class DpStragglers:
    """One DP: how many of the bulk's packages it holds back, by row status."""

    dp: str
    held: int
    by_status: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        statuses = {status: self.by_status.get(status, 0) for status in STRAGGLER_STATUSES}
        return {"dp": self.dp, "held": self.held, **statuses}


def stragglers_report(
    *,
    bulk_id: str,
    state: str,
    until: str,
    following: int,
    dps: Sequence[DpStragglers],
    dps_total: int,
    held_at_source: int,
    unlisted: int,
) -> dict[str, Any]:
    """`GET /v1/bulk-refreshes/{id}/stragglers`: the DPs that hold the most packages back, first."""
    listed = sorted(dps, key=lambda d: (-d.held, d.dp))
    return {
        "bulk_id": bulk_id,
        "state": state,
        "until": until,
        "following": following,
        "dps": [d.to_dict() for d in listed],
        "dps_omitted": max(dps_total - len(listed), 0),
        "held_at_source": held_at_source,
        "unlisted_rows": unlisted,
    }
