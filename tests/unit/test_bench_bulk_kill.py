"""The bulk kill benchmark's command line and table (pure parts; the run itself is `make bench-bulk-kill`)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.bulk_kill_bench import main, render_table


@pytest.mark.parametrize(
    "argv",
    [["--kill-at", "0"], ["--kill-at", "1.5"], ["--processes", "1"], ["--packages", "0"], ["--within-s", "0"]],
)
def test_bad_arguments_stop_with_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Each bad option exits 2 naming the problem, before anything starts, with no report on stdout."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    captured = capsys.readouterr()
    assert stopped.value.code == 2
    assert "error:" in captured.err and captured.out == ""


def _result(name: str, seconds: float, killed: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "killed": killed,
        "time_to_done_s": seconds,
        "children_with_a_final": 1000,
        "duplicate_finals": 0,
        "extra_refreshes": 0,
    }


def test_the_table_shows_both_times_and_their_difference_against_the_goal() -> None:
    """One line per bulk (without, with the kill) and the difference, said within or not within the goal."""
    report = {
        "parameters": {"packages": 1000, "within_s": 60.0},
        "rounds": [
            {
                "baseline": _result("base1", 20.4),
                "killed": _result("kill1", 45.8, {"finished_at_kill": 300}),
                "difference_s": 25.4,
                "within_goal": True,
            }
        ],
    }
    table = render_table(report)
    assert "without a kill" in table and "20.4" in table
    assert "SIGKILLed at 300 final" in table and "45.8" in table
    assert "+25.4" in table and "within 60 s" in table and "NOT" not in table
