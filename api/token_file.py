"""The token file, read again when it changes: tokens rotate without restarting the API.

At most once per `check_interval_s`, on a request, the file is stat'ed (a few microseconds; the
event loop is not held longer than that). When its identity (inode, size, mtime) changed, it is
parsed again: a good file replaces the tokens at once; a bad or missing one is logged (by its
error, which names a line number, never a line's content) and the tokens loaded before stay, so
an editing mistake does not lock every caller out. To revoke a token, remove its line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from api.tokens import Principal, TokenStore
from errors import ConfigError

__all__ = ["TOKEN_FILE_LOGGER", "TokenFile"]

TOKEN_FILE_LOGGER: Final = "sccm_refresh.api.tokens"  # noqa: S105 - a logger name
_log = logging.getLogger(TOKEN_FILE_LOGGER)

# What tells one version of the file from the next without reading it.
_Identity = tuple[int, int, int, int]


class TokenFile:
    """`TokenStore.authenticate`, over the file's current good content."""

    def __init__(self, path: Path, *, check_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Load `path` now: a ConfigError here (a bad file at start) stops the server."""
        self._path = path
        self._interval_s = check_interval_s
        self._clock = clock
        self._identity = _identity(path)
        self._store = TokenStore.load(path)
        self._checked_at = clock()

    def __len__(self) -> int:
        return len(self._store)

    def authenticate(self, token: str) -> Principal | None:
        if self._interval_s > 0 and self._clock() - self._checked_at >= self._interval_s:
            self._check()
        return self._store.authenticate(token)

    def _check(self) -> None:
        self._checked_at = self._clock()
        identity = _identity(self._path)
        if identity == self._identity:
            return
        self._identity = identity  # a bad version is reported once, not on every check
        if identity is None:
            _log.error(
                "token file %s is missing or unreadable; keeping the %d tokens loaded before", self._path, len(self)
            )
            return
        try:
            store = TokenStore.load(self._path)
        except ConfigError as exc:
            _log.error("%s; keeping the %d tokens loaded before", exc, len(self))
            return
        self._store = store
        _log.info("token file %s reloaded: %d tokens", self._path, len(store))


def _identity(path: Path) -> _Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
