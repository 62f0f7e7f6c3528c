"""The command line answers `--help` and usage errors without loading the service's heavy parts."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("celery", "redis", "fastapi", "pydantic", "kombu", "winrm", "requests")


def test_building_the_parser_imports_neither_celery_nor_redis_nor_fastapi() -> None:
    """`sccm-refresh --help` must be instant: container health checks and shells call it often."""
    probe = (
        "import sys; from cli.main import _build_parser; _build_parser(); "
        f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
