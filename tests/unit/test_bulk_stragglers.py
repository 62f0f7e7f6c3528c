"""What one child's distribution block contributes to its bulk's stragglers rollup (pure)."""

from __future__ import annotations

from typing import Any

from worker.domain.stragglers import (
    HELD_AT_SOURCE,
    UNLISTED,
    DpStragglers,
    decode_marks,
    encode_marks,
    straggler_marks,
    stragglers_report,
)


def block(rows: list[tuple[str | None, str]], *, phase: str = "dps", **counts: int) -> dict[str, Any]:
    return {
        "phase": phase,
        "counts": {"done": 0, "waiting": 0, "retrying": 0, "failed": 0, "unknown": 0, "removed": 0, **counts},
        "dps": [{"dp": dp, "status": status} for dp, status in rows],
    }


def test_listed_stragglers_are_named_by_dp_and_done_or_removed_rows_count_for_nothing() -> None:
    marks = straggler_marks(
        block(
            [("DP02.lab.local", "failed"), ("dp04", "waiting"), ("DP01", "done"), ("DP05", "removed")],
            failed=1,
            waiting=1,
            done=1,
            removed=1,
        )
    )
    assert marks == (("failed|DP02.LAB.LOCAL", 1), ("waiting|DP04", 1))


def test_stragglers_the_block_did_not_list_or_could_not_name_are_counted_unlisted() -> None:
    """A block lists at most FOLLOW__MAX_DP_ROWS rows: the rest of its straggler counts are unlisted."""
    marks = straggler_marks(
        block([("DP02", "retrying"), (None, "failed"), ("bad name|x", "waiting")], retrying=3, failed=1, waiting=1)
    )
    assert dict(marks) == {"retrying|DP02": 1, UNLISTED: 4}


def test_a_package_still_waiting_for_its_source_names_no_dp() -> None:
    """Phase source: every target reads `waiting`, but the site server holds the package back, not a DP."""
    assert straggler_marks(block([("DP01", "waiting"), ("DP02", "waiting")], phase="source", waiting=2)) == (
        (HELD_AT_SOURCE, 1),
    )


def test_no_block_or_everything_done_contributes_nothing() -> None:
    assert straggler_marks(None) == ()
    assert straggler_marks(block([("DP01", "done")], done=1)) == ()


def test_marks_round_trip_through_the_scripts_flat_form() -> None:
    marks = (("failed|DP02", 2), (UNLISTED, 1))
    assert encode_marks(marks) == ["failed|DP02", "2", UNLISTED, "1"]
    assert decode_marks(encode_marks(marks)) == marks


def test_the_report_lists_the_dps_holding_most_first_and_counts_the_rest() -> None:
    dps = [
        DpStragglers("DP01", 1, {"waiting": 1}),
        DpStragglers("DP03", 5, {"failed": 4, "retrying": 1}),
        DpStragglers("DP02", 5, {"retrying": 5}),
    ]
    report = stragglers_report(
        bulk_id="bulk-" + "1" * 32,
        state="running",
        until="distributed",
        following=7,
        dps=dps,
        dps_total=10,
        held_at_source=2,
        unlisted=3,
    )
    assert [(d["dp"], d["held"]) for d in report["dps"]] == [("DP02", 5), ("DP03", 5), ("DP01", 1)]
    assert report["dps"][1] == {"dp": "DP03", "held": 5, "waiting": 0, "retrying": 1, "failed": 4, "unknown": 0}
    assert (report["dps_omitted"], report["held_at_source"], report["unlisted_rows"]) == (7, 2, 3)
