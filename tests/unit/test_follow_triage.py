"""Which followed packages a phase-two snapshot reads DP rows for, after the rollup (pure)."""

from __future__ import annotations

from worker.domain.distribution import ContentCounts
from worker.domain.follow_triage import rollup_key, rows_kept_fresh, rows_needed, sample_every


def counts(*, success: int = 0, in_progress: int = 0, errors: int = 0, unknown: int = 0) -> ContentCounts:
    return ContentCounts("PS100001", success + in_progress + errors + unknown, success, in_progress, errors, unknown)


def needed(rollup: ContentCounts | None, interval: int = 0, every: int = 1_000_000) -> bool:
    return rows_needed(rollup, package_id="PS100001", interval=interval, sample_every=every)


def test_every_dp_installed_needs_rows_because_the_rollup_is_blind_to_versions() -> None:
    """The V0/V1 trap: the rollup counts a DP still at the old version in State 0 as a success, so
    "all installed" may be V0; only the rows' SourceVersion can say distributed."""
    assert needed(counts(success=10))


def test_a_failed_dp_needs_rows_even_with_copies_in_flight() -> None:
    """The rows name the failed DP (for the outcome and for redistribute_failed)."""
    assert needed(counts(success=5, in_progress=4, errors=1))


def test_nothing_in_progress_needs_rows_whatever_else_the_rollup_says() -> None:
    """Failed or unknown DPs and nothing copying: the verdict may be final, its per-DP rows wanted."""
    assert needed(counts(success=8, errors=2))
    assert needed(counts(success=9, unknown=1))


def test_no_rollup_or_an_empty_one_needs_rows() -> None:
    """A package the rollup does not list (or lists with no targeted DP): the rollup cannot tell."""
    assert needed(None)
    assert needed(ContentCounts("PS100001", 0, 0, 0, 0, 0))


def test_copies_in_flight_need_no_rows_except_a_sample() -> None:
    """Copies in flight, nothing failed: no verdict near. About 1 in `every` such packages is read
    anyway each interval (a long retry is still seen), different ones each interval."""
    in_flight = counts(success=3, in_progress=7)
    assert not needed(in_flight)
    sampled = [
        rows_needed(in_flight, package_id=f"PS1{n:05d}", interval=interval, sample_every=20)
        for n in range(500)
        for interval in range(20)
    ]
    assert 300 <= sum(sampled) <= 700  # 10,000 draws at 1/20: 500 expected
    assert needed(in_flight, every=1)


def test_sample_every_is_the_refresh_in_snapshot_intervals() -> None:
    """600 s between row reads at 30 s snapshots: 1 in 20; a refresh no longer than the interval: every time."""
    assert sample_every(600, 30) == 20
    assert sample_every(30, 30) == 1 and sample_every(0, 30) == 1


def test_kept_rows_stand_while_the_rollup_stands_still_and_not_longer_than_the_refresh() -> None:
    """A package whose copies all landed is read once, not at every interval until its request's
    next poll; a rollup that moved, or rows older than the refresh, are read again."""
    done = counts(success=10)
    key = rollup_key(done)
    assert rows_kept_fresh(done, key, 1000.0, now=1300.0, max_age_s=600)
    assert not rows_kept_fresh(counts(success=9, in_progress=1), key, 1000.0, now=1300.0, max_age_s=600)
    assert not rows_kept_fresh(done, key, 1000.0, now=1600.0, max_age_s=600)
    assert not rows_kept_fresh(done, key, 1000.0, now=1300.0, max_age_s=0)


def test_kept_rows_that_are_not_ours_are_not_reused() -> None:
    """No rollup now, a time that is not a number, a time from the future: read the rows again."""
    done = counts(success=10)
    assert not rows_kept_fresh(None, rollup_key(done), 1000.0, now=1300.0, max_age_s=600)
    assert not rows_kept_fresh(done, rollup_key(done), "1000", now=1300.0, max_age_s=600)
    assert not rows_kept_fresh(done, rollup_key(done), True, now=1300.0, max_age_s=600)
    assert not rows_kept_fresh(done, rollup_key(done), 2000.0, now=1300.0, max_age_s=600)
