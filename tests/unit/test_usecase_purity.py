"""The pure core stays pure, and the producers stay light: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = ("celery", "kombu", "redis", "winrm", "requests")


def loaded_after_import(module: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh interpreter has in sys.modules after importing `module`."""
    probe = f"import json, sys, {module}; print(json.dumps([m for m in {list(candidates)!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("module", ["worker.usecase", "worker.domain"])
def test_the_use_case_and_the_domain_import_no_io_library(module: str) -> None:
    """Importing the use case (or the domain) loads none of Celery, kombu, Redis, pywinrm, requests."""
    assert loaded_after_import(module, IO_LIBRARIES) == []


def test_the_producers_import_neither_the_celery_app_nor_pywinrm() -> None:
    """The API and the CLI import producers without paying for Celery's app or the WinRM client."""
    assert loaded_after_import("producers", ("winrm", "celery.app", "worker.app", "worker.runtime")) == []
