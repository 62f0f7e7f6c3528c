"""The burst benchmark as a user runs it, at a tiny size: it runs, prints one valid JSON report; nothing about speed."""

from __future__ import annotations

import pytest

from testing.bench_process import bench_report

pytestmark = pytest.mark.integration

TINY = ["--scenarios", "c3-20ms", "--requests", "24", "--processes", "1", "--threads", "3", "--timeout-s", "60"]
RUN_TIMEOUT_S = 110.0  # a safety net only: the tiny run takes well under a minute


def test_the_burst_bench_prints_one_json_report_with_the_ideal_beside_the_measured_pace() -> None:
    """A tiny run exits 0: every request accepted, never more operations in flight than the cap, ratios filled in."""
    report, stderr = bench_report("bench.burst_bench", *TINY, timeout_s=RUN_TIMEOUT_S)
    (result,) = report["results"]
    assert result["statuses"] == {"accepted": 24} and result["all_finished"]
    assert 1 <= result["peak_operations_in_flight"] <= 3
    assert result["ideal_per_s"] == 75.0 and result["share_of_ideal"] > 0
    assert set(report["goals"]) == {"c3-20ms"} and "c3-20ms" in stderr
