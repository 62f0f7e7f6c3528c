"""Bounded polling, for state in another process that offers no event to await.

Prefer events (outcomes over pub/sub, `ServerStats.wait_for`, `Emulator.wait_in_flight`);
this is for broker contents, another process's log, or Flower's API.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["POLL_S", "wait_until"]

POLL_S = 0.05


def wait_until(condition: Callable[[], bool], *, timeout_s: float, poll_s: float = POLL_S) -> bool:
    """True as soon as `condition()` holds; False if it still does not after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()
