"""Broker URLs and options that would take kombu's lossy BRPOP path are refused at start, saying why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.broker import broker_url_problem, same_redis, transport_options_problem
from config.settings import Settings, get_settings, reset_settings
from errors import ConfigError
from worker.app import celery_config
from worker.broker.transport import TRANSPORT


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://:pw@redis.example:6380/2", "redis://a:6379/0;redis://b:6379/0"],
)
def test_plain_and_tls_redis_urls_are_accepted_and_get_the_in_flight_transport(url: str) -> None:
    """redis:// and rediss:// (a failover list of them too) pass, and the workers take with the in-flight transport."""
    assert broker_url_problem(url) is None
    assert celery_config(Settings(broker_url=url))["broker_transport"] == TRANSPORT


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sentinel://s1:26379;sentinel://s2:26379", "sentinel:// is not supported"),
        ("redis://a:6379/0;sentinel://s2:26379", "sentinel:// is not supported"),
        ("redis+socket:///var/run/redis.sock", "a Unix socket (redis+socket://)"),
        ("socket:///var/run/redis.sock", "a Unix socket (socket://)"),
        ("unix:///var/run/redis.sock?db=0", "a Unix socket (unix://)"),
        ("amqp://guest@rabbit//", "scheme 'amqp' is not supported"),
    ],
)
def test_a_lossy_or_unknown_broker_url_is_refused_with_the_reason_and_the_way_out(url: str, said: str) -> None:
    """Each refusal names what is wrong, why (kombu's BRPOP loses a message) or what the broker must be."""
    problem = broker_url_problem(url)
    assert problem is not None and said in problem
    assert "redis://" in problem


def test_a_refused_url_is_one_settings_error_without_the_password() -> None:
    """Read from the environment: one ConfigError line naming broker_url, the URL's password not in it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SCCM_REFRESH_BROKER_URL", "sentinel://:Hunter2-secret@s1:26379")
        reset_settings()
        try:
            with pytest.raises(ConfigError) as raised:
                get_settings()
        finally:
            reset_settings()
    message = raised.value.message
    assert message.startswith("invalid sccm-refresh settings: broker_url: sentinel:// is not supported")
    assert "\n" not in message and "Hunter2-secret" not in message


def test_settings_refuse_a_unix_socket_broker() -> None:
    """Built in code, the settings object refuses it as well."""
    with pytest.raises(ValidationError, match="Unix socket"):
        Settings(broker_url="redis+socket:///tmp/redis.sock")


def test_a_global_key_prefix_is_refused_and_no_other_option_is() -> None:
    """global_keyprefix would make the channel fall back to BRPOP; the options we set pass."""
    problem = transport_options_problem({"global_keyprefix": "tenant-a:"})
    assert problem is not None and "global_keyprefix is not supported" in problem
    assert "SCCM_REFRESH_KEY_PREFIX" in problem
    assert transport_options_problem(celery_config(Settings())["broker_transport_options"]) is None
    assert transport_options_problem({"global_keyprefix": ""}) is None


@pytest.mark.parametrize(
    ("broker", "store", "same"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", True),
        ("redis://localhost/0", "redis://127.0.0.1:6379", True),
        ("redis://:secret@127.0.0.1:6379/2", "redis://127.0.0.1:6379/2", True),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1", False),
        ("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6379/0", False),
        ("redis://a:6379/0;redis://b:6379/0", "redis://a:6379/0", False),
        ("amqp://guest@127.0.0.1//", "redis://127.0.0.1:6379/0", False),
        ("redis://127.0.0.1:6379/x", "redis://127.0.0.1:6379/0", False),
    ],
)
def test_wakes_are_pushed_by_redis_only_when_the_broker_is_the_outcome_databases_own(
    broker: str, store: str, same: bool
) -> None:
    """Same host, port and database: a store script may push onto the broker's queues; anything else publishes."""
    assert same_redis(broker, store) is same
