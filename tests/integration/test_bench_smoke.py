"""The pipeline benchmark as a user runs it: tiny parameters, real processes; behaviour, not speed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testing.bench_process import bench_report

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "bench.pipeline_bench"]
TINY = ["--requests", "20", "--auth", "basic", "--concurrency", "2", "--packages", "100", "--seconds", "10"]
SCENARIOS = ("direct", "rejected", "refresh")
# Progress lines name every process the benchmark starts: redis-server, emulator, celery worker.
PID_LINE = re.compile(r"\bpid (\d+)\b")
WORKER_LINE = "celery worker pid"
RUN_TIMEOUT_S = 60.0  # a safety net only: the tiny run takes a few seconds


def started_pids(stderr: str) -> list[int]:
    return [int(pid) for pid in PID_LINE.findall(stderr)]


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_bench_prints_one_json_report_with_positive_rates_for_every_scenario() -> None:
    """A tiny basic-auth run exits 0 and reports completed direct, rejected and refresh scenarios."""
    report, _table = bench_report("bench.pipeline_bench", *TINY, timeout_s=RUN_TIMEOUT_S)
    assert report["ok"] is True and report["problems"] == []
    assert {"cpu_count", "python", "versions"} <= report["machine"].keys()
    assert report["parameters"]["requests"] == 20
    mode = report["results"]["basic"]
    assert set(SCENARIOS) <= mode.keys()
    for scenario in SCENARIOS:
        result = mode[scenario]
        assert result["completed"] == 20, scenario
        assert result["requests_per_s"] > 0, scenario
        assert result["cpu"]["ms_per_request"]["all_processes"] > 0, scenario
    assert mode["direct"]["return_values"] == {"0": 20}
    assert mode["rejected"]["statuses"] == {"rejected": 20}
    assert mode["refresh"]["statuses"] == {"accepted": 20}
    assert mode["rejected"]["enqueue_per_s"] > 0 and mode["refresh"]["enqueue_per_s"] > 0
    assert mode["rejected"]["latency_ms"]["end_to_end"]["count"] == 20
    assert mode["refresh"]["latency_ms"]["end_to_end"]["p95"] > 0
    # The rejected baseline never reaches WinRM; each refresh is one Get and one Invoke.
    assert mode["rejected"]["emulator"]["wsman_operations"] == 0
    assert mode["refresh"]["emulator"]["operations_per_request"] == 2.0
    assert mode["ratios"]["refresh_vs_direct_throughput"] > 0
    assert mode["ratios"]["refresh_vs_rejected_throughput"] > 0


def test_bench_stops_every_process_it_started_when_interrupted() -> None:
    """Ctrl-C (SIGINT) once the worker runs: exit 130, no report, redis/emulator/worker all gone."""
    bench = subprocess.Popen(
        [*BENCH, "--requests", "2000", "--auth", "basic", "--packages", "100", "--seconds", "1"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert bench.stderr is not None
        progress: list[str] = []
        for line in bench.stderr:
            progress.append(line)
            if WORKER_LINE in line:
                break
        bench.send_signal(signal.SIGINT)
        stdout, rest = bench.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()

    stderr = "".join(progress) + rest
    pids = started_pids(stderr)
    assert bench.returncode == 130, stderr[-3000:]
    assert stdout == ""
    assert len(pids) == 3, stderr[-3000:]
    assert [pid for pid in pids if is_running(pid)] == []
