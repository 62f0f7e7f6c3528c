"""Run a function in several threads at once and collect what they raised (for concurrency tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["run_in_threads"]


def run_in_threads(count: int, target: Callable[[int], None], *, timeout_s: float = 120.0) -> list[BaseException]:
    """Start `count` threads running `target(index)`, join them, return their exceptions.

    AssertionError if a thread is still running after `timeout_s` (a deadlock or livelock).
    """
    errors: list[BaseException] = []
    lock = threading.Lock()

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # handed to the caller, which asserts on it
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"test-thread-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads still running after {timeout_s} s: {stuck}"
    return errors
