"""What the benchmark commands share: comma-separated choices, a 0600 secret file, SIGTERM as Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, Final

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_PROBLEMS",
    "choice_list",
    "machine",
    "package_versions",
    "private_file",
    "report_run",
    "say",
    "sigterm_as_interrupt",
]

EXIT_PROBLEMS: Final = 1
EXIT_INTERRUPTED: Final = 130


def say(text: str) -> None:
    """Progress on stderr (stdout carries the JSON report)."""
    print(text, file=sys.stderr, flush=True)


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of these distributions (None: not installed)."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in names}


def machine() -> dict[str, Any]:
    """What a benchmark report says about where it ran: cores, load, Python, platform, key versions."""
    return {
        "cpu_count": os.cpu_count(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": package_versions(("celery", "kombu", "redis", "pywinrm", "pyspnego")),
    }


def choice_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated, de-duplicated, non-empty list of `choices`."""

    def parse(text: str) -> tuple[str, ...]:
        picked = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
        if not picked or any(item not in choices for item in picked):
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, comma-separated (got {text!r})")
        return picked

    return parse


@contextmanager
def private_file(path: Path, text: str) -> Iterator[Path]:
    """A file only its owner can read (a password for the worker processes), deleted afterwards."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def report_run(
    run: Callable[[], tuple[dict[str, Any], list[str]]], render_table: Callable[[dict[str, Any]], str]
) -> int:
    """Run a benchmark with SIGTERM as Ctrl-C; print its JSON report, its table and its problems; the exit status.

    A RuntimeError (a process that would not start, a bulk that did not end) is said in one
    message, after everything started was stopped.
    """
    try:
        with sigterm_as_interrupt():
            report, problems = run()
    except KeyboardInterrupt:
        say("interrupted: stopped every process it had started")
        return EXIT_INTERRUPTED
    except RuntimeError as exc:
        say(f"error: {exc}")
        return EXIT_PROBLEMS
    print(json.dumps(report, indent=2), flush=True)
    say(render_table(report))
    for problem in problems:
        say(f"problem: {problem}")
    return EXIT_PROBLEMS if problems else 0


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C: every process a benchmark started is stopped by its PID on the way out."""
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
