"""The bulk benchmark's pure parts: goal verdicts, the table, py-spy's collapsed stacks summarised."""

from __future__ import annotations

from typing import Any

from bench.bulk_report import goals, render_table
from bench.spy import top_costs


def efficiency_result(rate: float, naive: float, peak: int) -> dict[str, Any]:
    return {
        "packages": 2000,
        "latency_ms_per_operation": 100.0,
        "max_concurrency": 8,
        "workers": {"processes": 2, "threads": 8},
        "refreshes_per_s": rate,
        "ideal_refreshes_per_s": 80.0,
        "efficiency": round(rate / 80.0, 3),
        "steady_efficiency": round(rate / 80.0, 3),
        "slot_hold_ms": 104.0,
        "slot_occupancy": round(rate / (8 / 0.104), 3),
        "naive": {"refreshes_per_s": naive},
        "vs_naive": round(rate / naive, 2),
        "peak_concurrent_operations": peak,
        "broker": {"messages_per_refresh": 1.5},
        "child_latency_ms": {"p50": 120.0},
        "urgent": [{"latency_ms": 250.0}],
    }


def test_every_round_must_meet_a_goal() -> None:
    """Efficiency met in one round and missed in the other is not met; the values of both are kept."""
    verdicts = goals({"efficiency": [efficiency_result(78.0, 5.0, 8), efficiency_result(60.0, 5.0, 8)]})
    assert verdicts["efficiency"]["rounds"] == [0.975, 0.75]
    assert verdicts["efficiency"]["met"] is False
    assert verdicts["vs_naive"]["met"] is False
    assert verdicts["peak_concurrency"]["met"] is True


def test_fanout_memory_goal_compares_the_biggest_bulk_with_the_smallest() -> None:
    """Peak RSS growth of the 10,000 bulk minus the 2,000 bulk's is what the memory goal judges."""
    sizes = [
        {"packages": 2000, "enumerated_s": 0.5, "bulk_worker_peak_rss_growth_kib": 4000},
        {"packages": 10000, "enumerated_s": 2.1, "bulk_worker_peak_rss_growth_kib": 5000},
    ]
    verdicts = goals({"fanout": [{"sizes": sizes}]})
    assert verdicts["fanout_time"] == {"goal": verdicts["fanout_time"]["goal"], "rounds": [2.1], "met": True}
    assert verdicts["fanout_rss"]["rounds"] == [1000]
    assert verdicts["fanout_rss"]["met"] is True


def test_the_table_names_each_measurement_and_the_goals() -> None:
    """The readable table has the efficiency rows and the goals block, one row per round."""
    results = {"efficiency": [efficiency_result(70.0, 5.0, 8)]}
    table = render_table({"results": results, "goals": goals(results)})
    assert "1+3. bulk efficiency: 2000 packages, 100 ms per operation, C = 8" in table
    assert "0.875" in table and "250.0" in table
    assert "goals" in table


def test_collapsed_stacks_give_self_and_inclusive_shares() -> None:
    """Leaf frames count as self time, every frame on a stack counts once as inclusive time."""
    collapsed = "\n".join(
        [
            "run (/x/worker/execute.py:10);publish (/x/worker/outcome_writer.py:5) 3",
            "run (/x/worker/execute.py:10);send (/v/site-packages/winrm/transport.py:7) 1",
            "not a stack line",
        ]
    )
    summary = top_costs(collapsed)
    assert summary["samples"] == 4
    assert summary["self"][0] == {"function": "publish (worker/outcome_writer.py)", "share": 0.75, "samples": 3}
    assert summary["inclusive"][0] == {"function": "run (worker/execute.py)", "share": 1.0, "samples": 4}
    assert {"function": "send (winrm/transport.py)", "share": 0.25, "samples": 1} in summary["self"]
