"""A full Redis (OOM) is recognised in every form it comes in, and met with growing pauses and rare log lines."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError

from worker.stores.redis_full import FullBackoff, is_redis_full

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


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("NOSCRIPT No matching script."),
        ResponseError("READONLY You can't write against a read only replica."),
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
        "broker consumer resumed: Redis takes writes again after 150.0 s full"
    ]
