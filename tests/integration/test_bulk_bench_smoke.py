"""The bulk benchmark as a user runs it, at a tiny size: it runs, prints one valid JSON report; nothing about speed."""

from __future__ import annotations

import pytest

from testing.bench_process import bench_report

pytestmark = pytest.mark.integration

TINY = [
    "--rounds",
    "1",
    "--packages",
    "40",
    "--fanout-sizes",
    "40,80",
    "--latency-ms",
    "20",
    "--max-concurrency",
    "3",
    "--processes",
    "1",
    "--threads",
    "2",
    "--naive",
    "3",
    "--urgent",
    "1",
]
RUN_TIMEOUT_S = 110.0  # a safety net only: the tiny run takes well under a minute


def test_the_bulk_bench_prints_one_json_report_with_every_measurement() -> None:
    """A tiny run exits 0 and its JSON holds efficiency, fan-out, overhead and the goals, each filled in."""
    report, stderr = bench_report("bench.bulk_bench", *TINY, timeout_s=RUN_TIMEOUT_S)
    assert report["ok"] is True and report["problems"] == []
    assert report["parameters"]["packages"] == 40
    (efficiency,) = report["results"]["efficiency"]
    assert efficiency["complete"] is True and efficiency["statuses"] == {"accepted": 40}
    assert efficiency["ideal_refreshes_per_s"] == 150.0  # 3 slots / (1 operation x 20 ms)
    assert efficiency["refreshes_per_s"] > 0 and efficiency["naive"]["refreshes_per_s"] > 0
    assert efficiency["child_latency_ms"]["count"] == 40
    assert [u["status"] for u in efficiency["urgent"]] == ["accepted"]
    (fanout,) = report["results"]["fanout"]
    assert [size["total"] for size in fanout["sizes"]] == [40, 80]
    assert all(size["bulk_worker_pid"] is not None for size in fanout["sizes"])
    (overhead,) = report["results"]["overhead"]
    assert overhead["refresh"]["statuses"] == {"accepted": 40}
    assert overhead["noop"]["worker_cpu_ms_per_task"] > 0
    assert overhead["floor"]["parts_ms"]["wsman_invoke"] > 0
    assert set(report["goals"]) >= {"efficiency", "vs_naive", "peak_concurrency", "fanout_time", "overhead"}
    assert "1+3. bulk efficiency" in stderr and "goals" in stderr
