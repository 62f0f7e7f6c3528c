"""docker-compose.yml is valid against the Compose specification (no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_validates_against_the_compose_spec() -> None:
    """check-jsonschema's bundled compose-spec schema accepts the file (it catches unknown keys)."""
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    result = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_publishes_ports_on_loopback_only() -> None:
    """The emulator's admin API and Flower share their ports: never published on every interface."""
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    published = [line.strip() for line in text.splitlines() if line.strip().startswith('- "') and ":" in line]
    assert published, "no published ports found"
    assert all(line.startswith('- "127.0.0.1:') for line in published), published
