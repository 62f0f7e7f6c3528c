"""A Redis at `maxmemory` with `noeviction` (the documented setup, full): every write that allocates is refused.

    with redis_full(client):   # the server answers OOM to BLMOVE, LPUSH, SET, XADD, ... until the block ends
        ...

The server is filled the way production fills it (data keeps arriving until a write is refused),
then its limit is lowered well under what it uses: used memory drifts with client buffers (by a
few hundred KB with a worker and its clients), and a limit near the edge lets a write through now
and then. Leaving the block frees the filler and lifts the limit: the server takes writes again,
as when an operator makes room.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from redis.exceptions import OutOfMemoryError

__all__ = ["fill_redis", "free_redis", "redis_full"]

FILLER_KEY: Final = "test:redis-full:filler"
_HEADROOM_BYTES: Final = 256 * 1024
_CHUNK: Final = "x" * (32 * 1024)
_MAX_CHUNKS: Final = 1_000  # 32 MB: a server that never refuses is not configured as asked


def _used_bytes(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def fill_redis(client: Any) -> None:
    """Fill the server to its (new) maxmemory under noeviction, so that writes are refused from now on."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", _used_bytes(client) + _HEADROOM_BYTES)
    for _ in range(_MAX_CHUNKS):
        try:
            client.append(FILLER_KEY, _CHUNK)
        except OutOfMemoryError:
            break
    else:
        raise AssertionError("the server never refused a write: is maxmemory honoured?")
    client.config_set("maxmemory", max(1, _used_bytes(client) // 2))


def free_redis(client: Any) -> None:
    """Make room: no limit any more, and the filler gone (deleting is allowed at maxmemory)."""
    client.config_set("maxmemory", 0)
    client.delete(FILLER_KEY)


@contextmanager
def redis_full(client: Any) -> Iterator[None]:
    """The server full for the duration of the block."""
    fill_redis(client)
    try:
        yield
    finally:
        free_redis(client)
