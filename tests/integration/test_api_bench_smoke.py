"""`python -m bench.api_bench` runs end to end (tiny sizes) and reports every scenario."""

from __future__ import annotations

import pytest

from bench.api_bench import SCENARIOS
from testing.bench_process import bench_report

pytestmark = pytest.mark.integration


def test_the_api_benchmark_reports_latency_and_throughput_for_every_scenario() -> None:
    """JSON on stdout with p50/p99 and requests/s per scenario, no errors, and the goal's verdict."""
    report, stderr = bench_report(
        "bench.api_bench", "--sequential", "20", "--threads", "2", "--seconds", "0.3", timeout_s=120
    )
    assert set(report["results"]) == {scenario.name for scenario in SCENARIOS}
    for name, scenario in report["results"].items():
        assert scenario["sequential"]["errors"] == 0 and scenario["concurrent"]["errors"] == 0, name
        assert scenario["sequential"]["p50_ms"] > 0 and scenario["concurrent"]["requests_per_s"] > 0
    assert set(report["goal"]["scenarios"]) <= set(report["comparisons"])
    assert isinstance(report["goal"]["met"], bool)
    # Each goal route is also set against its floor: the no-op plus the one Redis command it needs.
    assert set(report["goal"]["floor_p50_ratios"]) == set(report["goal"]["scenarios"])
    for name in report["goal"]["scenarios"]:
        assert report["comparisons"][name]["p50_ratio_to_floor"] > 0
    assert "p50 ms" in stderr
