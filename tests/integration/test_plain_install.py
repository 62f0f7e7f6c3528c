"""A user's `pip install sccm-refresh` (no extras): the wheel builds, installs from the lock, and every
command answers `--help` without a traceback; `flower` names the extra it needs.

The wheel is built from this checkout into a temporary folder and installed into a new virtualenv
with exactly the lock's versions of the runtime dependencies (`uv export --no-dev`): what a user
gets, minus whatever the developer's own virtualenv happens to hold.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import _build_parser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
_INSTALL_TIMEOUT_S = 300
_NOT_SOURCES = (".git", ".venv", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".sccm-refresh")


def _run(argv: list[str], *, cwd: Path, timeout_s: float = _INSTALL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of the CLI (`health worker` included), read from the parser itself."""
    for action in parser._actions:  # argparse exposes subcommands only through this attribute
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                yield path
                yield from _subcommands(sub, path)


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(wheel, virtualenv bin folder) of the product installed without extras, from the lock."""
    if not UV.exists():
        pytest.fail(f"uv is missing from the virtualenv ({UV}): run `make` (the dev group installs it)")
    work = tmp_path_factory.mktemp("plain-install")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    built = _run([str(UV), "build", "--wheel", "--out-dir", str(work / "dist"), "--quiet", str(source)], cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("sccm_refresh-*.whl")
    requirements = work / "requirements.txt"
    exported = _run(
        [str(UV), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-header", "-o", str(requirements)],
        cwd=ROOT,
    )
    assert exported.returncode == 0, exported.stderr
    venv = work / "venv"
    created = _run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=work)
    assert created.returncode == 0, created.stderr
    installed = _run(
        [
            str(UV),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(requirements),
            str(wheel),
        ],
        cwd=work,
    )
    assert installed.returncode == 0, installed.stderr
    yield wheel, venv / "bin"


def test_wheel_carries_the_lua_scripts_and_none_of_the_repository_tooling(plain_install: tuple[Path, Path]) -> None:
    """The Lua scripts ship beside their modules; tests/, testing/, bench/ and chaos/ stay in the checkout."""
    wheel, _ = plain_install
    names = zipfile.ZipFile(wheel).namelist()
    shipped_lua = {name for name in names if name.endswith(".lua")}
    repo_lua = {path.relative_to(ROOT).as_posix() for path in (ROOT / "worker").rglob("*.lua")}
    assert repo_lua, "no Lua scripts found in worker/"
    assert repo_lua <= shipped_lua
    tooling = [name for name in names if name.split("/", 1)[0] in {"tests", "testing", "bench", "chaos"}]
    assert tooling == []


def test_every_subcommand_answers_help_without_extras(plain_install: tuple[Path, Path]) -> None:
    """`sccm-refresh --help` and each command's `--help` exit 0 with usage text and no traceback."""
    _, bin_dir = plain_install
    commands = [(), *_subcommands(_build_parser())]
    assert ("flower",) in commands and ("health", "worker") in commands
    for command in commands:
        result = _run([str(bin_dir / "sccm-refresh"), *command, "--help"], cwd=bin_dir, timeout_s=60)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, command
        assert "usage" in result.stdout.lower() or "Usage" in result.stdout, (command, result.stdout[:200])


def test_flower_without_the_monitor_extra_names_the_extra_in_one_line(plain_install: tuple[Path, Path]) -> None:
    """No Flower installed: `sccm-refresh flower` exits 2 with one line saying what to install."""
    _, bin_dir = plain_install
    result = _run([str(bin_dir / "sccm-refresh"), "flower", "--insecure-no-auth"], cwd=bin_dir, timeout_s=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "sccm-refresh[monitor]" in result.stderr
    assert "Traceback" not in result.stderr
