"""The emulator benchmark as a user runs it, with tiny parameters: behaviour, not speed."""

from __future__ import annotations

import pytest

from testing.bench_process import bench_report

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 90.0  # a safety net only: the tiny run takes a few seconds


def test_emulator_bench_reports_both_parts_against_their_baselines() -> None:
    """A tiny run exits 0 with requests modes, catalogue runs (every package enumerated) and ratios."""
    args = ["--requests", "20", "--seconds", "2", "--baseline-packages", "20", "--catalogue-sizes", "300"]
    report, _table = bench_report("bench.emulator_bench", *args, "--page-sizes", "40", timeout_s=RUN_TIMEOUT_S)
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
