"""A fences store with nothing in it (worker/stores/fence.py: RedisInvokeFences), for tests that need none.

No snapshot is ever found and every attempt lock is granted: a use case test that is about
something else (a bulk's child, following to the DPs) runs as a lone delivery would.
"""

from __future__ import annotations

from worker.usecase.values import FenceSnapshot

__all__ = ["NoFences"]


class NoFences:
    def read(self, request_id: str) -> FenceSnapshot | None:
        return None

    def write(self, request_id: str, snapshot: FenceSnapshot) -> None:
        return None

    def try_lock(self, request_id: str, *, ttl_s: int) -> str | None:
        return "token"

    def lock_left_s(self, request_id: str) -> float:
        return 0.0

    def unlock(self, request_id: str, token: str) -> None:
        return None
