"""The token file, read again when it changes: tokens rotate without restarting the API.

At start the file must be good: a regular file (a symlink to one is fine), not writable by its
group or by others, every line valid, no name or hash twice; else the server does not start.

At most once per `check_interval_s`, on a request, the file is looked at again, in a worker
thread (never on the event loop: a FIFO or a slow disk must not hold every request). When its
identity (inode, size, times, mode) changed:

* a good version replaces the tokens at once;
* a bad version (a bad line, a repeated name or hash, the wrong permissions, not a regular
  file, missing, unreadable) can only take tokens away: a token stays only when the new
  version holds its very line (hash, role and name) among its good lines. So a revocation (a
  removed line) applies at once whatever else is wrong in the file, and nothing a bad version
  adds or changes is taken. A version that cannot be read holds no line: every token goes
  until the file is fixed (fail closed).

The error (it names a line number, never a line's content) is logged once per version and
reported by `error`, which /readyz and /metrics show until a good version is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from api.tokens import Principal, TokenEntry, TokenStore, parse_lines
from errors import ConfigError

__all__ = ["TOKEN_FILE_LOGGER", "TokenFile", "TokenVersion", "read_version"]

TOKEN_FILE_LOGGER: Final = "sccm_refresh.api.tokens"  # noqa: S105 - a logger name
# 10,000 lines of ~100 characters, with room for comments.
_MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_log = logging.getLogger(TOKEN_FILE_LOGGER)

# What tells one version of the file from the next without reading it.
_Identity = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class TokenVersion:
    """One reading of the file: its identity, its good entries, and what is wrong with it (None: nothing)."""

    identity: _Identity | None
    entries: tuple[TokenEntry, ...]
    problem: str | None


def read_version(path: Path) -> TokenVersion:
    """Read and parse the file without blocking on what is not a regular file; never raises."""
    where = f"the API token file {str(path)!r}"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return TokenVersion(None, (), f"cannot read {where}: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        identity = _identity_of(st)
        if not stat.S_ISREG(st.st_mode):
            return TokenVersion(identity, (), f"{where} is not a regular file")
        data = _read_all(fd)
    except OSError as exc:
        return TokenVersion(None, (), f"cannot read {where}: {exc.strerror or exc}")
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE_BYTES:
        return TokenVersion(identity, (), f"{where} is larger than {_MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return TokenVersion(identity, (), f"{where} is not UTF-8")
    entries, errors = parse_lines(text.splitlines(), source=f"token file {str(path)!r}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        errors.insert(0, f"{where} is writable by its group or by others (chmod go-w)")
    return TokenVersion(identity, tuple(entries), errors[0] if errors else None)


class TokenFile:
    """`TokenStore.authenticate`, over what the file's versions allow (see the module docstring)."""

    def __init__(self, path: Path, *, check_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Load `path` now: a ConfigError here (a bad file at start) stops the server."""
        self._path = path
        self._interval_s = check_interval_s
        self._clock = clock
        version = read_version(path)
        if version.problem is not None:
            raise ConfigError(version.problem)
        self._identity = version.identity
        self._store = TokenStore(version.entries)
        self._checked_at = clock()
        self._checking = False
        self.error: str | None = None  # what is wrong with the file's current version

    def __len__(self) -> int:
        return len(self._store)

    def authenticate(self, token: str) -> Principal | None:
        if self._interval_s > 0 and not self._checking and self._clock() - self._checked_at >= self._interval_s:
            self._start_check()
        return self._store.authenticate(token)

    def check_now(self) -> None:
        """Look at the file and apply what changed, in this thread (tests; no event loop needed)."""
        self._apply(self._look())

    def _start_check(self) -> None:
        self._checked_at = self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.check_now()
            return
        self._checking = True
        future = loop.run_in_executor(None, self._look)
        future.add_done_callback(self._checked)

    def _checked(self, future: Future[TokenVersion | None] | asyncio.Future[TokenVersion | None]) -> None:
        self._checking = False
        self._checked_at = self._clock()
        try:
            version = future.result()
        except Exception as exc:  # a bug in reading: keep what we have, say so
            _log.error("token file check failed: %s", type(exc).__name__)
            return
        self._apply(version)

    def _look(self) -> TokenVersion | None:
        """The file's new version, or None when it has not changed (runs in a worker thread)."""
        try:
            identity: _Identity | None = _identity_of(os.stat(self._path))
        except OSError:
            identity = None
        if identity is not None and identity == self._identity:
            return None
        version = read_version(self._path)
        if version.identity is None and self._identity is None:
            return None  # still unreadable: reported already
        return version

    def _apply(self, version: TokenVersion | None) -> None:
        if version is None:
            return
        self._identity = version.identity
        if version.problem is None:
            self._store = TokenStore(version.entries)
            self.error = None
            _log.info("token file %s reloaded: %d tokens", self._path, len(self._store))
            return
        listed = set(version.entries)
        kept = [entry for entry in self._store.entries if entry in listed]
        dropped = len(self._store) - len(kept)
        self._store = TokenStore(kept)
        self.error = version.problem
        _log.error(
            "%s; a bad version only takes tokens away: kept %d its good lines hold, dropped %d, added none",
            version.problem,
            len(kept),
            dropped,
        )


def _identity_of(st: os.stat_result) -> _Identity:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= _MAX_FILE_BYTES:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
