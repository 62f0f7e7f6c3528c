"""The emulator benchmark as a user runs it, with tiny parameters: behaviour, not speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 90.0  # a safety net only: the tiny run takes a few seconds


def test_emulator_bench_reports_both_parts_against_their_baselines() -> None:
    """A tiny run exits 0 with requests modes, catalogue runs (every package enumerated) and ratios."""
    argv = [sys.executable, "-m", "bench.emulator_bench", "--requests", "20", "--seconds", "2"]
    argv += ["--baseline-packages", "20", "--catalogue-sizes", "300", "--page-sizes", "40"]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    modes = report["requests"]["modes"]
    assert {"basic_http", "ntlm_http_encrypted"} == modes.keys()
    assert all(mode["requests"] == 20 and mode["server_operations"] == 20 for mode in modes.values())
    catalogue = report["catalogue"]
    (big,) = catalogue["runs"]
    assert (catalogue["baseline"]["packages"], big["packages"]) == (20, 300)
    assert big["start_s"] > 0
    assert big["full_enumeration"][0].items() >= {"items": 300, "requests": 8, "page_size": 40}.items()
    assert set(big["per_request"]) == {"get", "invoke", "wql_packageid"}
    assert catalogue["relative_to_baseline"]["300"]["start_s"] > 0
