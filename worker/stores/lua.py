"""Load the Lua scripts that keep multi-key Redis operations atomic.

Each script lives in a `.lua` file beside the module that uses it (shipped as package data)
and is prepended with `lua_common.lua`'s helpers. `register_script` runs it with EVALSHA and
falls back to loading it when the server's script cache is empty (after a restart).
"""

from __future__ import annotations

import functools
from importlib import resources

from redis import Redis
from redis.commands.core import Script

__all__ = ["epoch_arg", "load_script", "script_source"]

_COMMON = "lua_common.lua"


@functools.cache
def _source(name: str) -> str:
    package = resources.files("worker.stores")
    return package.joinpath(_COMMON).read_text(encoding="utf-8") + package.joinpath(name).read_text(encoding="utf-8")


def script_source(name: str) -> str:
    """The source `load_script` registers (for an asyncio client, which registers its own)."""
    return _source(name)


def load_script(redis: Redis, name: str) -> Script:
    """The script `worker/stores/<name>` (with the common helpers) registered on `redis`."""
    return redis.register_script(_source(name))


def epoch_arg(now_s: float | None) -> str:
    """A script's clock argument: the caller's epoch seconds, or '' for the Redis server's TIME."""
    if now_s is None:
        return ""
    if not isinstance(now_s, int | float) or isinstance(now_s, bool) or not (0 <= now_s < 1e11):
        raise ValueError(f"now_s must be epoch seconds, got {now_s!r}")
    return f"{now_s:.6f}"
