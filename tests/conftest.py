"""Shared pytest wiring: fixtures live in the installed `testing` package, one module per service."""

import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

pytest_plugins = [
    "testing.fixtures_redis",
    "testing.fixtures_emulator",
    "testing.fixtures_pipeline",
    "testing.fixtures_api",
    "testing.fixtures_worker",
    "testing.fixtures_kdc",
]

# Hypothesis keeps its example database and caches outside the checkout (the suite writes nothing
# there); failing examples still replay on the next run on this machine.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "sccm-refresh-hypothesis")
