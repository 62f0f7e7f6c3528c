"""The token file re-read when it changes: a good version takes over, a bad one can only take tokens away."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from api.token_file import TOKEN_FILE_LOGGER, TokenFile
from api.tokens import Principal, hash_token, token_line
from errors import ConfigError

OLD = "old-token-0123456789abcdef"
KEEP = "keep-token-5a4b3c2d1e0f9a8b"
NEW = "new-token-fedcba9876543210"
INTERVAL_S = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, text: str, *, bump_ns: int, mode: int = 0o600) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    # Two writes within the file system's timestamp granularity look alike: set mtime apart.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_ns))


def lines(*tokens: tuple[str, str, str]) -> str:
    return "".join(token_line(token, role, name) + "\n" for token, role, name in tokens)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    _write(path, lines((OLD, "submit", "svc-old"), (KEEP, "read", "svc-keep")), bump_ns=0)
    return path


def test_a_changed_file_replaces_the_tokens_once_the_interval_has_passed(token_path: Path, clock: Clock) -> None:
    """A good new version is taken whole once the interval has passed, not before."""
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    _write(token_path, lines((NEW, "read", "svc-new")), bump_ns=10**9)
    clock.now += INTERVAL_S / 2
    assert tokens.authenticate(OLD) == Principal("svc-old", "submit"), "checked before the interval"
    clock.now += INTERVAL_S
    assert tokens.authenticate(NEW) == Principal("svc-new", "read")
    assert tokens.authenticate(OLD) is None and tokens.error is None


def test_a_bad_version_applies_its_revocations_adds_nothing_and_is_reported_once(
    token_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Old's line removed, a typo and a new token added: old goes at once, keep stays, new is not taken."""
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    bad = lines((KEEP, "read", "svc-keep"), (NEW, "submit", "svc-new")) + f"plain-{NEW} submit leaked\n"
    _write(token_path, bad, bump_ns=10**9)
    with caplog.at_level(logging.INFO, logger=TOKEN_FILE_LOGGER):
        for _ in range(3):
            clock.now += INTERVAL_S
            assert tokens.authenticate(OLD) is None, "the revocation applies although the file is bad"
            assert tokens.authenticate(KEEP) == Principal("svc-keep", "read")
            assert tokens.authenticate(NEW) is None, "a bad version adds nothing"
    assert tokens.error is not None and "line 3" in tokens.error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "dropped 1" in errors[0].getMessage()
    assert NEW not in caplog.text
    _write(token_path, lines((NEW, "read", "svc-new")), bump_ns=2 * 10**9)
    clock.now += INTERVAL_S
    assert tokens.authenticate(NEW) == Principal("svc-new", "read"), "a fixed file is taken"
    assert tokens.error is None


def test_a_changed_role_in_a_bad_version_is_not_taken(token_path: Path, clock: Clock) -> None:
    """A line whose role changed in a bad version is not the line loaded before: that token goes too."""
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    _write(token_path, lines((OLD, "submit", "svc-old"), (KEEP, "submit", "svc-keep")) + "oops\n", bump_ns=10**9)
    clock.now += INTERVAL_S
    assert tokens.authenticate(KEEP) is None and tokens.authenticate(OLD) == Principal("svc-old", "submit")


def test_a_removed_file_accepts_no_token_until_it_is_back(token_path: Path, clock: Clock) -> None:
    """No file holds no line: every token goes (fail closed), and the error says so."""
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    token_path.unlink()
    clock.now += INTERVAL_S
    assert tokens.authenticate(OLD) is None and len(tokens) == 0
    assert tokens.error is not None and "cannot read" in tokens.error
    _write(token_path, lines((OLD, "submit", "svc-old")), bump_ns=10**9)
    clock.now += INTERVAL_S
    assert tokens.authenticate(OLD) == Principal("svc-old", "submit")


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_others_may_write_is_refused_at_start_and_adds_nothing_later(
    token_path: Path, clock: Clock, mode: int
) -> None:
    """Group- or world-writable: the server does not start; a later such version can only take away."""
    token_path.chmod(mode)
    with pytest.raises(ConfigError, match="writable by its group or by others"):
        TokenFile(token_path, check_interval_s=INTERVAL_S)
    token_path.chmod(0o600)
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    _write(token_path, lines((KEEP, "read", "svc-keep"), (NEW, "submit", "intruder")), bump_ns=10**9, mode=mode)
    clock.now += INTERVAL_S
    assert tokens.authenticate(NEW) is None and tokens.authenticate(OLD) is None
    assert tokens.authenticate(KEEP) == Principal("svc-keep", "read")


def test_a_symlink_is_judged_by_the_file_it_points_to(tmp_path: Path, token_path: Path) -> None:
    """A link to a good file loads (mounted secrets are links); a link to a world-writable one does not."""
    link = tmp_path / "link"
    link.symlink_to(token_path)
    assert len(TokenFile(link, check_interval_s=0)) == 2
    token_path.chmod(0o666)
    with pytest.raises(ConfigError, match="writable"):
        TokenFile(link, check_interval_s=0)


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """Opening a FIFO for reading would wait for a writer: it is refused as not a regular file, at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="not a regular file"):
        TokenFile(fifo, check_interval_s=0)
    assert time.monotonic() - started < 1


def test_the_file_is_read_off_the_event_loop(token_path: Path, clock: Clock) -> None:
    """On a running loop, authenticate schedules the check in a thread and answers from what it has."""
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    _write(token_path, lines((NEW, "read", "svc-new")), bump_ns=10**9)

    async def main() -> tuple[Principal | None, Principal | None]:
        clock.now += INTERVAL_S
        before = tokens.authenticate(NEW)  # the check has only started
        for _ in range(200):
            await asyncio.sleep(0.01)
            if tokens.authenticate(NEW) is not None:
                break
        return before, tokens.authenticate(NEW)

    before, after = asyncio.run(main())
    assert before is None and after == Principal("svc-new", "read")


def test_an_interval_of_zero_reads_the_file_at_start_only(token_path: Path, clock: Clock) -> None:
    """api.token_reload_s = 0: no later version is looked at."""
    tokens = TokenFile(token_path, check_interval_s=0, clock=clock)
    _write(token_path, lines((NEW, "read", "svc-new")), bump_ns=10**9)
    clock.now += 3600
    assert tokens.authenticate(NEW) is None and tokens.authenticate(OLD) is not None


@pytest.mark.parametrize(
    "text",
    [
        "not a token line\n",
        lines((OLD, "submit", "svc-a")) + f"{hash_token(OLD)} read svc-b\n",
        lines((OLD, "submit", "svc-a")) + f"{hash_token(NEW)} read svc-a\n",
    ],
    ids=["malformed", "same-hash-twice", "same-name-twice"],
)
def test_a_bad_file_at_start_is_a_config_error(tmp_path: Path, text: str) -> None:
    """A malformed line, one hash under two names, one name twice: the server does not start."""
    path = tmp_path / "tokens"
    _write(path, text, bump_ns=0)
    with pytest.raises(ConfigError, match="line"):
        TokenFile(path, check_interval_s=INTERVAL_S)
