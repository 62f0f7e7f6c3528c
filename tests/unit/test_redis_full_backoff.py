"""A Redis refusing writes (OOM, MISCONF, READONLY, NOREPLICAS) is recognised in every form it comes in, and met
with growing pauses and rare log lines.

The error texts are the ones real Redis 6.2 and 7.0 servers answered (a plain command, a script, a
transaction), as redis-py raises them."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ExecAbortError, OutOfMemoryError, ReadOnlyError, ResponseError

from worker.stores.redis_full import (
    FULL_DETAIL,
    MISCONF_DETAIL,
    NOREPLICAS_DETAIL,
    READONLY_DETAIL,
    FullBackoff,
    is_redis_full,
    refuses_writes,
    write_refusal,
)

OOM = "OOM command not allowed when used memory > 'maxmemory'."


@pytest.mark.parametrize(
    "error",
    [
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        # Redis 7.0: a script's refused write comes wrapped.
        ResponseError(f"Error running script (call to f_1ebd80a8): @user_script:22: @user_script: 22: -{OOM}"),
        # Redis 7.2: the refused command's error first, the script named after it.
        ResponseError(f"{OOM} script: aa8fdfc4, on @user_script:1."),
    ],
)
def test_a_refusal_for_lack_of_memory_is_recognised_plain_in_a_script_or_in_a_transaction(error: Exception) -> None:
    """OutOfMemoryError, and a script error carrying the OOM refusal, all mean Redis is full."""
    assert is_redis_full(error)


MISCONF = (
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that "
    "may modify the data set are disabled, because this instance is configured to report errors during writes if RDB "
    "snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the "
    "RDB error."
)
NOREPLICAS = "NOREPLICAS Not enough good replicas to write."
SCRIPT_62 = (
    "Error running script (call to f_ffc723bf78e8f4213c7a8cda07ef4d68c52a2ff8): @user_script:1: @user_script: 1: -"
)


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (ReadOnlyError("You can't write against a read only replica."), READONLY_DETAIL),
        (
            ReadOnlyError("You can't write against a read only replica. script: ffc723bf, on @user_script:1."),
            READONLY_DETAIL,
        ),
        (ResponseError(f"{SCRIPT_62}READONLY You can't write against a read only replica."), READONLY_DETAIL),
        (ResponseError(NOREPLICAS), NOREPLICAS_DETAIL),
        (ResponseError(f"{NOREPLICAS} script: ffc723bf, on @user_script:1."), NOREPLICAS_DETAIL),
        (ResponseError(f"{SCRIPT_62}{NOREPLICAS}"), NOREPLICAS_DETAIL),
        (ResponseError(f"Command # 1 (SET a 1) of pipeline caused error: {NOREPLICAS}"), NOREPLICAS_DETAIL),
        (ResponseError(MISCONF), MISCONF_DETAIL),
        (ResponseError(f"{SCRIPT_62}{MISCONF}"), MISCONF_DETAIL),
        (ResponseError(f"Command # 1 (SET a 1) of pipeline caused error: {MISCONF}"), MISCONF_DETAIL),
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), FULL_DETAIL),
        (
            ExecAbortError("Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'."),
            FULL_DETAIL,
        ),
        (ExecAbortError(f"Transaction discarded because of: {MISCONF}"), MISCONF_DETAIL),
    ],
)
def test_every_passing_refusal_of_writes_is_recognised_with_what_an_operator_should_read(
    error: Exception, detail: str
) -> None:
    """MISCONF, READONLY, NOREPLICAS (and OOM) mean: wait and try again; each says its own cause."""
    assert refuses_writes(error) and write_refusal(error) == detail
    assert is_redis_full(error) == (detail == FULL_DETAIL)


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("NOSCRIPT No matching script."),
        ResponseError("ERR value mentions READONLY in the middle"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        RedisConnectionError("Connection refused"),
        ValueError(NOREPLICAS),
    ],
)
def test_other_errors_are_not_taken_for_a_refusal_of_writes(error: Exception) -> None:
    assert not refuses_writes(error)


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("NOSCRIPT No matching script."),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("ERR value mentions OOM command not allowed in the middle"),
        RedisConnectionError("Connection refused"),
        ValueError(OOM),
    ],
)
def test_other_errors_are_not_taken_for_a_full_redis(error: Exception) -> None:
    """Other refusals, an outage, or OOM text in another exception type are not 'full'."""
    assert not is_redis_full(error)


def test_pauses_grow_from_half_a_second_to_five_and_start_again_after_recovery() -> None:
    """0.5, 1, 2, 4, 5, 5 s while refused; back to 0.5 s for the next episode."""
    backoff = FullBackoff("consumer", logging.getLogger("test.full"))
    pauses = [backoff.refused(float(second)) for second in range(6)]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.remaining_s(5.0) == 5.0 and backoff.remaining_s(11.0) == 0.0
    backoff.accepted(20.0)
    assert backoff.remaining_s(20.0) == 0.0
    assert backoff.refused(30.0) == 0.5


def test_a_long_episode_is_logged_once_a_minute_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    """Refused every second for 150 s: three 'paused' lines (0, 60, 120 s), then one 'resumed' line."""
    backoff = FullBackoff("broker consumer", logging.getLogger("test.full"))
    with caplog.at_level(logging.WARNING, logger="test.full"):
        for second in range(150):
            backoff.refused(float(second))
        backoff.accepted(150.0)
        backoff.accepted(151.0)
    lines = [record.getMessage() for record in caplog.records]
    assert sum("broker consumer paused: Redis is full" in line for line in lines) == 3
    assert [line for line in lines if "resumed" in line] == [
        "broker consumer resumed: Redis takes writes again after 150.0 s refusing them"
    ]
