"""`python -m bench.api_bench` runs end to end (tiny sizes) and reports every scenario."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_api_benchmark_reports_latency_and_throughput_for_every_scenario() -> None:
    """JSON on stdout with p50/p99 and requests/s per scenario, no errors, and the goal's verdict."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.api_bench", "--sequential", "20", "--threads", "2", "--seconds", "0.3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert len(report["results"]) == 5
    for name, scenario in report["results"].items():
        assert scenario["sequential"]["errors"] == 0 and scenario["concurrent"]["errors"] == 0, name
        assert scenario["sequential"]["p50_ms"] > 0 and scenario["concurrent"]["requests_per_s"] > 0
    assert set(report["goal"]["scenarios"]) <= set(report["comparisons"])
    assert isinstance(report["goal"]["met"], bool)
    assert "p50 ms" in result.stderr
