"""Settings: read once from env and file, validated, secrets never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.settings import Settings, get_settings, reset_settings
from errors import ConfigError
from worker.app import celery_config

SECRET = "s3cr3t-Pa55w0rd!"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SCCM_REFRESH_"):
            monkeypatch.delenv(name)
    reset_settings()


def test_providers_are_read_from_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """SCCM_REFRESH_PROVIDERS__<SITE>__<FIELD> configures one provider per site code."""
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__ps1__ENDPOINT", "https://sccm01:5986/wsman")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__ps1__USERNAME", "LAB\\svc")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__ps1__PASSWORD", SECRET)
    settings = get_settings()
    provider = settings.provider("PS1")
    assert provider.endpoint == "https://sccm01:5986/wsman"
    assert provider.secret_password() == SECRET


def test_secrets_never_appear_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    """The password is masked in repr, str and model_dump_json."""
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__ENDPOINT", "http://h:5985/wsman")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__USERNAME", "svc")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__PASSWORD", SECRET)
    settings = get_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(celery_config(settings))):
        assert SECRET not in text


def test_toml_file_supplies_settings_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TOML file named by SCCM_REFRESH_CONFIG_FILE is read; the environment overrides it."""
    password_file = tmp_path / "pw"
    password_file.write_text(SECRET + "\n")
    config = tmp_path / "sccm-refresh.toml"
    config.write_text(
        'queue = "from-file"\nkey_prefix = "file"\n'
        "[providers.ABC]\n"
        f'endpoint = "http://h:5985/wsman"\nusername = "svc"\npassword_file = "{password_file}"\n'
        "[retry.medium]\nmax_attempts = 5\ninitial_backoff_s = 1\nmax_backoff_s = 2\n"
    )
    monkeypatch.setenv("SCCM_REFRESH_CONFIG_FILE", str(config))
    monkeypatch.setenv("SCCM_REFRESH_QUEUE", "from-env")
    settings = get_settings()
    assert settings.queue == "from-env"
    assert settings.key_prefix == "file"
    assert settings.retry.medium.max_attempts == 5
    assert settings.provider("abc").secret_password() == SECRET


def test_invalid_settings_become_one_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value names the setting; the secret given next to it is not echoed."""
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__ENDPOINT", "ftp://nope")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__USERNAME", "svc")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__PASSWORD", SECRET)
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert "providers.ps1.endpoint: endpoint must be an http" in info.value.message.lower()
    assert SECRET not in info.value.message


def test_unknown_site_is_a_config_error_listing_known_sites() -> None:
    """Asking for a site with no provider says which sites exist."""
    settings = Settings(providers={"PS1": {"endpoint": "http://h/wsman", "username": "u", "password": "p"}})
    with pytest.raises(ConfigError, match=r"'XYZ'.*PS1"):
        settings.provider("XYZ")


def test_countdowns_stay_below_the_visibility_timeout() -> None:
    """max_countdown_s >= visibility timeout is refused: kombu would redeliver the ETA forever."""
    with pytest.raises(ValueError, match="visibility_timeout_s"):
        Settings(limits={"visibility_timeout_s": 600, "max_countdown_s": 600})


def test_celery_config_is_at_least_once_json_only_with_events() -> None:
    """The Celery settings that make delivery at-least-once and visible in Flower."""
    settings = Settings()
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]
    vt = settings.limits.visibility_timeout_s
    assert conf["broker_transport_options"]["visibility_timeout"] == vt
    assert "result_backend" not in conf and conf["task_ignore_result"]  # the outcome stream is the record
    assert settings.limits.max_countdown_s < vt
    assert max(settings.retry.transient.max_backoff_s, settings.limits.max_countdown_s) <= vt
    assert conf["task_time_limit"] < vt


def test_one_field_of_a_retry_policy_can_be_overridden_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting one field of the medium policy keeps the policy's other defaults."""
    monkeypatch.setenv("SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S", "60")
    settings = get_settings()
    default = Settings().retry
    assert settings.retry.medium.max_backoff_s == 60
    assert settings.retry.medium.max_attempts == default.medium.max_attempts
    assert settings.retry.transient == default.transient


def test_basic_over_plain_http_needs_an_explicit_opt_in() -> None:
    """Basic over http:// would send the password in the clear: refused unless allow_unencrypted."""
    base = {"endpoint": "http://sccm01:5985/wsman", "transport": "basic", "username": "u", "password": "p"}
    with pytest.raises(ValueError, match="in the clear"):
        Settings(providers={"PS1": base})
    assert Settings(providers={"PS1": {**base, "allow_unencrypted": True}}).provider("PS1").allow_unencrypted


def test_basic_password_outside_latin1_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests cannot send it; the error says why and never shows the password."""
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__ENDPOINT", "https://sccm01:5986/wsman")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__TRANSPORT", "basic")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__USERNAME", "u")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__PASSWORD", "Sommer€2024-Geheim")
    with pytest.raises(ConfigError) as info:
        get_settings()
    assert "Latin-1" in info.value.message and "Sommer" not in info.value.message


def test_redistribution_is_off_by_default_and_set_per_site_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A site's `redistribute_failed` and the FOLLOW__REDISTRIBUTE_* bounds come from the environment;
    a window of 0 (no bound at all) is refused."""
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__ENDPOINT", "https://sccm01:5986/wsman")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__USERNAME", "LAB\\svc")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__PASSWORD", SECRET)
    defaults = get_settings()
    assert defaults.provider("PS1").redistribute_failed is False
    assert (defaults.follow.redistribute_after_s, defaults.follow.redistribute_window_s) == (14_400.0, 86_400.0)
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__REDISTRIBUTE_FAILED", "true")
    monkeypatch.setenv("SCCM_REFRESH_FOLLOW__REDISTRIBUTE_AFTER_S", "7200")
    reset_settings()
    settings = get_settings()
    assert settings.provider("PS1").redistribute_failed and settings.follow.redistribute_after_s == 7200.0
    monkeypatch.setenv("SCCM_REFRESH_FOLLOW__REDISTRIBUTE_WINDOW_S", "0")
    reset_settings()
    with pytest.raises(ConfigError, match="redistribute_window_s"):
        get_settings()
