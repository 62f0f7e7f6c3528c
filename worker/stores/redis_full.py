"""A Redis that refuses writes for a while: full (OOM), unable to persist (MISCONF), a replica (READONLY),
short of replicas (NOREPLICAS).

None of them is an outage (reads and pings still work) or a bug of ours: each heals by itself or
by an operator's hand (memory frees, a save succeeds, a failover ends, a replica catches up). So
whoever meets one waits and tries again (`FullBackoff`: growing pauses, one log line when it
starts, one a minute while it lasts, one when it ends), and nobody treats it as fatal.

What each refuses differs. A full Redis refuses the writes that allocate: deletions and EXPIRE
still go through. MISCONF, READONLY and NOREPLICAS refuse every write, deletions and EXPIRE
included (and BRPOP/BLMOVE, which may write). A transaction (MULTI/EXEC) is refused as a whole
once any of its commands is; a Lua script only at its first write (after that it runs to its
end, so a script stays atomic).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

__all__ = ["FULL_DETAIL", "FullBackoff", "is_redis_full", "refuses_writes", "write_refusal"]

# What operators read (logs, the API's 503, /readyz): the cause and the cure.
FULL_DETAIL: Final = "Redis is full (maxmemory reached, noeviction): it refuses writes until memory frees"
MISCONF_DETAIL: Final = (
    "Redis cannot persist to disk (MISCONF: its last save failed, stop-writes-on-bgsave-error): "
    "it refuses writes until a save succeeds"
)
READONLY_DETAIL: Final = (
    "Redis is a read-only replica (READONLY): it refuses writes until it is a primary again (a failover?)"
)
NOREPLICAS_DETAIL: Final = (
    "Redis has too few replicas in sync (NOREPLICAS, min-replicas-to-write): it refuses writes until they catch up"
)

# The error code, where Redis puts it: first (a plain reply; a script's refused write from Redis
# 7.2), after a '-' (a script's, Redis 6.2 and 7.0: "... @user_script: 22: -OOM command not
# allowed ..."), after redis-py's "caused error: " (a refused command of a pipeline), or after
# "because of: " (EXECABORT: a MULTI refused at its EXEC, as kombu's restore of a rejected message can be).
_CODE: Final = re.compile(r"(?:^|-|caused error: |because of: )(OOM command not allowed|MISCONF|READONLY|NOREPLICAS)\b")
_DETAIL_OF: Final = {
    "OOM command not allowed": FULL_DETAIL,
    "MISCONF": MISCONF_DETAIL,
    "READONLY": READONLY_DETAIL,
    "NOREPLICAS": NOREPLICAS_DETAIL,
}
_FIRST_PAUSE_S: Final = 0.5
_MAX_PAUSE_S: Final = 5.0
_LOG_EVERY_S: Final = 60.0


def write_refusal(exc: BaseException) -> str | None:
    """What an operator should read when Redis refused a write for a passing reason; None for any other error.

    redis-py strips the code from the errors it has a class for (OutOfMemoryError,
    ReadOnlyError); the others, and the refusals wrapped in a script error, carry it in the text.
    """
    if isinstance(exc, OutOfMemoryError):
        return FULL_DETAIL
    if isinstance(exc, ReadOnlyError):
        return READONLY_DETAIL
    if not isinstance(exc, ResponseError):
        return None
    found = _CODE.search(str(exc))
    return _DETAIL_OF[found.group(1)] if found is not None else None


def refuses_writes(exc: BaseException) -> bool:
    """True when Redis refused a write for a reason that passes (full, MISCONF, READONLY, NOREPLICAS)."""
    return write_refusal(exc) is not None


def is_redis_full(exc: BaseException) -> bool:
    """True when Redis refused a command because it is at maxmemory (OOM), in a script or a transaction too."""
    return write_refusal(exc) == FULL_DETAIL


@dataclass
class FullBackoff:
    """Pauses while Redis refuses writes: 0.5 s, doubling to 5 s; says so once a minute, not once a try.

    `refused(now, detail)` after a refusal gives the pause before the next try; `accepted(now)`
    after any write that went through ends the episode. Times are monotonic seconds. Not
    thread-safe: one per consuming channel.
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

    @property
    def in_episode(self) -> bool:
        """Redis refused the last write (and none went through since)."""
        return self.full_since is not None

    def refused(self, now: float, detail: str = FULL_DETAIL) -> float:
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
                detail,
                now - self.full_since,
            )
        return self.pause_s

    def accepted(self, now: float) -> None:
        """A write went through: the episode, if any, is over."""
        if self.full_since is None:
            return
        self.logger.warning(
            "%s resumed: Redis takes writes again after %.1f s refusing them", self.what, now - self.full_since
        )
        self.full_since = None
        self.pause_s = 0.0
        self.paused_until = float("-inf")
        self._logged_at = float("-inf")

    def remaining_s(self, now: float) -> float:
        """How much of the current pause is left (0 when not pausing)."""
        return max(0.0, self.paused_until - now)
