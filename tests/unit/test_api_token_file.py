"""The token file re-read when it changes: new tokens take over, a bad version keeps the last good one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from api.token_file import TOKEN_FILE_LOGGER, TokenFile
from api.tokens import Principal, token_line
from errors import ConfigError

OLD = "old-token-0123456789abcdef"
NEW = "new-token-fedcba9876543210"
INTERVAL_S = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, text: str, *, bump_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    # Two writes within the file system's timestamp granularity look alike: set mtime apart.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_ns))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(token_line(OLD, "submit", "svc-old") + "\n", encoding="utf-8")
    return path


def test_a_changed_file_replaces_the_tokens_once_the_interval_has_passed(token_path: Path, clock: Clock) -> None:
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    _write(token_path, token_line(NEW, "read", "svc-new") + "\n", bump_ns=10**9)
    clock.now += INTERVAL_S / 2
    assert tokens.authenticate(OLD) == Principal("svc-old", "submit"), "checked before the interval"
    clock.now += INTERVAL_S
    assert tokens.authenticate(NEW) == Principal("svc-new", "read")
    assert tokens.authenticate(OLD) is None


def test_a_bad_version_keeps_the_last_good_tokens_and_is_logged_once_without_its_content(
    token_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    _write(token_path, f"plain-{NEW} submit leaked\n", bump_ns=10**9)
    with caplog.at_level(logging.INFO, logger=TOKEN_FILE_LOGGER):
        for _ in range(3):
            clock.now += INTERVAL_S
            assert tokens.authenticate(OLD) == Principal("svc-old", "submit")
            assert tokens.authenticate(f"plain-{NEW}") is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "line 1" in errors[0].getMessage() and "keeping the 1 tokens" in errors[0].getMessage()
    assert NEW not in caplog.text
    _write(token_path, token_line(NEW, "read", "svc-new") + "\n", bump_ns=2 * 10**9)
    clock.now += INTERVAL_S
    assert tokens.authenticate(NEW) == Principal("svc-new", "read"), "a fixed file is taken"


def test_a_removed_file_keeps_the_tokens_loaded_before(
    token_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = TokenFile(token_path, check_interval_s=INTERVAL_S, clock=clock)
    token_path.unlink()
    clock.now += INTERVAL_S
    with caplog.at_level(logging.ERROR, logger=TOKEN_FILE_LOGGER):
        assert tokens.authenticate(OLD) == Principal("svc-old", "submit")
    assert "missing or unreadable" in caplog.text


def test_an_interval_of_zero_reads_the_file_at_start_only(token_path: Path, clock: Clock) -> None:
    tokens = TokenFile(token_path, check_interval_s=0, clock=clock)
    _write(token_path, token_line(NEW, "read", "svc-new") + "\n", bump_ns=10**9)
    clock.now += 3600
    assert tokens.authenticate(NEW) is None and tokens.authenticate(OLD) is not None


def test_a_bad_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("not a token line\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        TokenFile(path, check_interval_s=INTERVAL_S)
