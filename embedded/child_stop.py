"""Stopping a child process we started: a signal, a grace period, then SIGKILL, always by its PID.

One place for what every wrapper of a server or worker process did by hand: the redis-server,
the celery worker, the emulator and Flower, the API under test, headless Chromium.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

__all__ = ["stop_child"]

_REAP_S = 10.0


def stop_child(
    process: subprocess.Popen[Any],
    *,
    grace_s: float,
    sig: signal.Signals = signal.SIGTERM,
    group: bool = False,
    reap_s: float | None = _REAP_S,
) -> int | None:
    """Send `sig` if it still runs, wait `grace_s`, then SIGKILL it and wait `reap_s`: its exit code.

    `group` signals its process group (a child started with `start_new_session`, whose own
    children must go with it); `reap_s=None` waits for as long as the kill takes.
    """
    if process.poll() is None:
        _send(process, sig, group=group)
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _send(process, signal.SIGKILL, group=group)
        return process.wait(timeout=reap_s)


def _send(process: subprocess.Popen[Any], sig: signal.Signals, *, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except ProcessLookupError:
        pass  # it exited in between: the wait reaps it
