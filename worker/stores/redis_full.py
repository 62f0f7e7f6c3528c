"""A full Redis: `maxmemory` reached under `noeviction`, so every write that allocates is refused (OOM).

It is not an outage (reads, deletions and pings still work) and not a bug: it heals when memory
frees (outcome entries expire, an operator makes room). So whoever meets it waits and tries again
(`FullBackoff`: growing pauses, one log line when it starts, one a minute while it lasts, one when
it ends), and nobody treats it as fatal.

A transaction (MULTI/EXEC) is refused as a whole, deletions included, once Redis is full; a Lua
script only up to its first write (after that it runs to its end, so a script stays atomic).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from redis.exceptions import OutOfMemoryError, ResponseError

__all__ = ["FULL_DETAIL", "FullBackoff", "is_redis_full"]

# What operators read (logs, the API's 503, /readyz): the cause and the cure.
FULL_DETAIL: Final = "Redis is full (maxmemory reached, noeviction): it refuses writes until memory frees"

_OOM_IN_TEXT: Final = re.compile(r"(?:^|-)OOM command not allowed")
_FIRST_PAUSE_S: Final = 0.5
_MAX_PAUSE_S: Final = 5.0
_LOG_EVERY_S: Final = 60.0


def is_redis_full(exc: BaseException) -> bool:
    """True when Redis refused a command because it is at maxmemory (OOM), in a script or a transaction too."""
    if isinstance(exc, OutOfMemoryError):
        return True
    # In a script the refusal comes wrapped: "Error running script (...): @user_script:22: -OOM
    # command not allowed ..." (Redis 7.0), or first with the script named after it (7.2).
    return isinstance(exc, ResponseError) and _OOM_IN_TEXT.search(str(exc)) is not None


@dataclass
class FullBackoff:
    """Pauses while Redis is full: 0.5 s, doubling to 5 s; says so once a minute, not once a try.

    `refused(now)` after a refusal gives the pause before the next try; `accepted(now)` after any
    write that went through ends the episode. Times are monotonic seconds. Not thread-safe: one per
    consuming channel.
    """

    what: str
    logger: logging.Logger
    first_pause_s: float = _FIRST_PAUSE_S
    max_pause_s: float = _MAX_PAUSE_S
    log_every_s: float = _LOG_EVERY_S
    full_since: float | None = None
    pause_s: float = 0.0
    paused_until: float = float("-inf")
    _logged_at: float = float("-inf")

    def refused(self, now: float) -> float:
        """Redis refused a write: the pause before trying again (logged at most once per `log_every_s`)."""
        if self.full_since is None:
            self.full_since = now
            self.pause_s = self.first_pause_s
        else:
            self.pause_s = min(self.max_pause_s, self.pause_s * 2)
        self.paused_until = now + self.pause_s
        if now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            self.logger.warning(
                "%s paused: %s (for %.0f s so far; said once a minute)",
                self.what,
                FULL_DETAIL,
                now - self.full_since,
            )
        return self.pause_s

    def accepted(self, now: float) -> None:
        """A write went through: the episode, if any, is over."""
        if self.full_since is None:
            return
        self.logger.warning("%s resumed: Redis takes writes again after %.1f s full", self.what, now - self.full_since)
        self.full_since = None
        self.pause_s = 0.0
        self.paused_until = float("-inf")
        self._logged_at = float("-inf")

    def remaining_s(self, now: float) -> float:
        """How much of the current pause is left (0 when not pausing)."""
        return max(0.0, self.paused_until - now)
