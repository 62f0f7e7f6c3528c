"""A benchmark run as its users run it (`python -m bench.<name> ...`), for the benchmarks' smoke tests.

    report, table = bench_report("bench.burst_bench", "--requests", "24", timeout_s=110)

It must exit 0 (its stderr is quoted when it does not); its JSON report (stdout) and the table it
prints on stderr are returned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["bench_report"]

_REPO_ROOT = Path(__file__).resolve().parents[1]


def bench_report(module: str, *args: str, timeout_s: float) -> tuple[dict[str, Any], str]:
    """Run `python -m module args` from the repo root; its JSON report and its stderr, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=_REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report, done.stderr
