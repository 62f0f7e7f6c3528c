"""`sccm-refresh` as a user runs it, in a child process, against a test pipeline's Redis.

    result = run_cli("status", bulk_id, "--dps", env=pipeline_env(pipeline))

The environment drops every `SCCM_REFRESH_*` variable of the test process first, and puts the
repo root on the path: the child runs `-m cli.main` from any directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testing.fixtures_pipeline import Pipeline

__all__ = ["clean_env", "pipeline_env", "run_cli"]

_REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCCM_REFRESH_")}
    env["PYTHONPATH"] = str(_REPO_ROOT)
    env.update(extra)
    return env


def pipeline_env(pipeline: Pipeline, **extra: str) -> dict[str, str]:
    return clean_env(
        SCCM_REFRESH_BROKER_URL=pipeline.redis_url,
        SCCM_REFRESH_REDIS_URL=pipeline.redis_url,
        SCCM_REFRESH_QUEUE=pipeline.queue,
        SCCM_REFRESH_KEY_PREFIX=pipeline.keys.prefix,
        **extra,
    )
