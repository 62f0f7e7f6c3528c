"""Which followed packages a per-site snapshot reads DP rows for, after the cheap rollup (pure).

    if rows_needed(counts, package_id=..., interval=..., sample_every=...): read its rows

Phase two of following (worker/domain/follow.py) decides on DP rows: only they carry each DP's
SourceVersion. Reading them costs about four WS-Man operations per 200 packages x 10 DPs; the
per-package rollup `SMS_ObjectContentExtraInfo` costs one per 200 packages. So the snapshot reads
the rollup of every followed package and rows only where the rollup says a verdict may be near:

* no rollup row, or one that names no targeted DP: the rollup cannot tell, read the rows;
* nothing in progress: every DP installed (done, or still at V0: the V0/V1 trap, the rollup counts
  a DP at the old version in State 0 as a success, so only the rows can say "distributed"),
  failed or unknown: the verdict may be final and its per-DP rows are wanted;
* a DP failed: the rows name it (and `redistribute_failed` needs its NAL path);
* otherwise (copies in flight, nothing failed) rows are not needed, except for a sample of
  1/`sample_every` of them per interval (the same package is seldom sampled twice running), so
  a DP retrying for hours is still seen retrying, and progress is still told, every
  `sample_every` intervals on average.

Rows read once are kept (in Redis) and reused while the package's rollup stays the same, for at
most `rows_refresh_s`: a package whose copies have all landed is read once, not at every
interval until its request's next poll (polls back off to 30 minutes; snapshots are every 30 s).
The price: a copy that starts and finishes entirely between two snapshots leaves the rollup as it
was, and is seen at most `rows_refresh_s` late.
"""

from __future__ import annotations

import zlib

from worker.domain.distribution import ContentCounts

__all__ = ["rollup_key", "rows_kept_fresh", "rows_needed", "sample_every"]


def rows_needed(counts: ContentCounts | None, *, package_id: str, interval: int, sample_every: int) -> bool:
    """True when this interval's snapshot should read the package's DP rows (see the module)."""
    if counts is None or counts.targeted == 0:
        return True
    if counts.in_progress == 0 or counts.errors > 0:
        return True
    return _sampled(package_id, interval, sample_every)


def sample_every(rows_refresh_s: float, snapshot_s: float) -> int:
    """Intervals between two row reads of a package in flight, on average (1: every interval)."""
    if rows_refresh_s <= snapshot_s or snapshot_s <= 0:
        return 1
    return int(rows_refresh_s // snapshot_s)


def _sampled(package_id: str, interval: int, every: int) -> bool:
    # A hash of (package, interval): spread across packages and intervals, no burst and no Redis state.
    return every <= 1 or zlib.crc32(f"{package_id}:{interval}".encode()) % every == 0


def rollup_key(counts: ContentCounts) -> list[int]:
    """What must stay the same for rows read earlier to be reused."""
    return [counts.targeted, counts.success, counts.in_progress, counts.errors, counts.unknown]


def rows_kept_fresh(
    counts: ContentCounts | None, kept_key: object, kept_at: object, *, now: float, max_age_s: float
) -> bool:
    """True when rows kept from an earlier read can stand for this interval's (see the module)."""
    if counts is None or not isinstance(kept_at, int | float) or isinstance(kept_at, bool):
        return False
    return kept_key == rollup_key(counts) and 0 <= now - kept_at < max_age_s
