"""Sample a worker with py-spy while a measurement runs, and summarise where its CPU went.

    with Spy(pid, out_path) as spy: ...        # py-spy record -f raw (collapsed stacks), non-blocking
    summary = top_costs(out_path.read_text())  # pure: self and inclusive shares per function

py-spy (`pip install py-spy`) samples from outside the process and, with --nonblocking, never
pauses it, so the worker runs as it would unobserved. Only the thread holding the GIL is sampled
(--gil): the worker's threads share one interpreter lock, so the shares are of its Python CPU
(threads waiting on a socket or for the lock are left out).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

__all__ = ["Spy", "find_py_spy", "top_costs"]

_RATE_HZ: Final = 500
_STOP_TIMEOUT_S: Final = 30.0
# A collapsed-stack line: "frame;frame;...;frame count"; a frame is "function (file:line)".
_LINE: Final = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME: Final = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    """py-spy next to this Python (a venv) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Spy:
    """`py-spy record` attached to a PID until stopped (SIGINT makes it write its output)."""

    def __init__(self, pid: int, out: Path, *, rate_hz: int = _RATE_HZ) -> None:
        binary = find_py_spy()
        if binary is None:
            raise RuntimeError("py-spy not found: pip install py-spy")
        argv = [
            binary,
            "record",
            "-p",
            str(pid),
            "-o",
            str(out),
            "-f",
            "raw",
            "-r",
            str(rate_hz),
            "--nonblocking",
            "--gil",
        ]
        self.out = out
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        """Stop sampling; the collapsed stacks (empty if py-spy could not attach)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, errors = self.process.communicate(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        if not self.out.is_file():
            raise RuntimeError(f"py-spy wrote nothing: {errors.strip()[-500:]}")
        return self.out.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Spy:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _label(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1] if "/" in path else path
    return f"{match['function']} ({path})"


def top_costs(collapsed: str, *, top: int = 20) -> dict[str, Any]:
    """Self and inclusive shares of the samples per function, the biggest first."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        count = int(match["count"])
        frames = [_label(frame) for frame in match["stack"].split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for label in set(frames):
            inclusive[label] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": label, "share": round(count / total, 4), "samples": count}
            for label, count in counter.most_common(top)
        ]

    return {"samples": total, "self": share(own) if total else [], "inclusive": share(inclusive) if total else []}
