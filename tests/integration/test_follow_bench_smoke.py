"""The follow benchmark as a user runs it, at a tiny size: one valid JSON report, batched below per-request reads."""

from __future__ import annotations

import pytest

from testing.bench_process import bench_report

pytestmark = pytest.mark.integration

# 300 packages read 200 a query: chunk rounding, not the design, decides the tiny run's ratio to the goal.
TINY = ["--packages", "300", "--memory-at", "100", "--baseline-sample", "50", "--intervals", "2"]
RUN_TIMEOUT_S = 60.0  # a safety net only: the tiny run takes a few seconds


def test_the_follow_bench_prints_one_json_report_with_batched_reads_below_per_request_reads() -> None:
    """A tiny run (real Redis, the emulator over HTTP, pywinrm) exits 0; every figure is there, the
    operations it sent are the ones the emulator counted, and per 100 packages the snapshot costs
    less than each package reading its own status, in both phases; rows read once are reused."""
    report, stderr = bench_report("bench.follow_bench", *TINY, "--goal-ops-per-100", "5", timeout_s=RUN_TIMEOUT_S)
    summary = report["summary"]
    assert report["settings"]["packages"] == 300 and report["settings"]["dps"] == 10
    assert summary["baseline_phase_one_ops_per_100"] >= 100 and summary["baseline_phase_two_ops_per_100"] >= 100
    assert 0 < summary["phase_one_ops_per_100"] < summary["baseline_phase_one_ops_per_100"]
    assert 0 < summary["phase_two_steady_ops_per_100"] < summary["baseline_phase_two_ops_per_100"]
    assert summary["phase_two_steady_ops_per_100"] < summary["phase_two_all_installed_ops_per_100"]
    assert summary["phase_two_all_installed_next_ops_per_100"] < summary["phase_two_all_installed_ops_per_100"]
    assert report["refresh"]["accepted"] == 300
    (first, second) = report["phase_two_in_flight"]
    assert first["answers"]["operations"] == 0 and first["answers"]["in_flight"] > first["answers"]["with_rows"]
    assert all(i["operations"] == i["emulator_operations"] for i in (first, second, report["phase_one"]))
    assert summary["traced_peak_mib_at_full"] > 0 and "phase one (SourceVersion)" in stderr
