"""Unit tests of emulator.cli: flags map onto EmulatorSettings; bad values are argparse errors."""

from __future__ import annotations

import dataclasses

import pytest

from emulator.cli import build_parser, settings_from_args
from emulator.settings import EmulatorSettings, FaultRates

_PASSWORD = "pw"


def _settings(*argv: str) -> EmulatorSettings:
    return settings_from_args(build_parser().parse_args(list(argv)), _PASSWORD)


def test_defaults_match_emulator_settings() -> None:
    """With no flags the settings equal the dataclass defaults (plus the password)."""
    assert _settings() == dataclasses.replace(EmulatorSettings(), password=_PASSWORD)


def test_every_flag_reaches_its_field() -> None:
    """Each flag sets the EmulatorSettings field it names."""
    settings = _settings(
        "--host", "192.0.2.1", "--port", "0", "--site-code", "ABC", "--machine", "m1",
        "--username", "DOM\\u", "--auth", "ntlm", "--allow-unencrypted", "--tls", "self-signed",
        "--packages", "7", "--seed", "3", "--compress-share", "0.5", "--medium-not-ready-share", "1",
        "--medium-ready-after-s", "2.5", "--medium-ready-after-attempts", "4",
        "--medium-failure-mode", "fault", "--distmgr-delay-s", "1.5", "--latency-ms", "250",
        "--latency-distribution", "exponential", "--fault-rate", "http_503=0.1",
        "--fault-rate", "quota_fault=0.2", "--idle-timeout-s", "9", "--max-ops-per-user", "3",
        "--max-envelope-size-bytes", "1000",
    )  # fmt: skip
    assert settings == EmulatorSettings(
        host="192.0.2.1",
        port=0,
        site_code="ABC",
        machine="m1",
        username="DOM\\u",
        password=_PASSWORD,
        auth_modes=("ntlm",),
        allow_unencrypted=True,
        tls="self-signed",
        package_count=7,
        seed=3,
        compress_share=0.5,
        medium_not_ready_share=1.0,
        medium_ready_after_s=2.5,
        medium_ready_after_attempts=4,
        medium_failure_mode="fault",
        distmgr_delay_s=1.5,
        latency_s=0.25,
        latency_distribution="exponential",
        fault_rates=FaultRates(http_503=0.1, quota_fault=0.2),
        idle_timeout_s=9.0,
        max_concurrent_operations_per_user=3,
        max_envelope_size_bytes=1000,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "99999"],
        ["--auth", "digest"],
        ["--fault-rate", "disk_full=0.1"],
        ["--fault-rate", "http_503=2"],
        ["--packages", "0"],
        ["--latency-ms", "-1"],
        ["--latency-ms", "60001"],
        ["--latency-ms", "1e300"],
        ["--idle-timeout-s", "0"],
        ["--tls", "sometimes"],
    ],
)
def test_bad_values_exit_2_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse rejects bad values with exit status 2 and a usage message, not a traceback."""
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls", "files"], "--tls-cert"),
        (["--tls-cert", "c.pem"], "--tls files"),
        (["--fault-rate", "http_503=0.7", "--fault-rate", "timeout_fault=0.7"], "add up"),
        (["--username", "LAB\\svc", "--denied-user", "lab\\SVC"], "--denied-user"),
    ],
)
def test_inconsistent_flags_are_rejected(argv: list[str], message: str) -> None:
    """Combinations argparse cannot check alone raise ValueError (main turns it into exit 2)."""
    with pytest.raises(ValueError, match=message):
        _settings(*argv)


def test_denied_user_flags_reach_the_settings() -> None:
    """--denied-user is repeatable and names accounts only (they share the emulator's password)."""
    settings = _settings("--denied-user", "LAB\\reader", "--denied-user", "LAB\\other")
    assert settings.denied_users == ("LAB\\reader", "LAB\\other")


def test_distmgr_flags_reach_their_fields() -> None:
    """--distmgr-threads and --distmgr-time-per-package-s set the DistMgr model."""
    settings = _settings("--distmgr-threads", "5", "--distmgr-time-per-package-s", "2.5")
    assert (settings.distmgr_threads, settings.distmgr_time_per_package_s) == (5, 2.5)


def test_the_old_distmgr_delay_flag_and_field_mean_the_time_per_package() -> None:
    """--distmgr-delay-s (and EmulatorSettings(distmgr_delay_s=...)) still work: time per package."""
    assert _settings("--distmgr-delay-s", "0.5").distmgr_time_per_package_s == 0.5
    assert EmulatorSettings(distmgr_delay_s=0.5) == EmulatorSettings(distmgr_time_per_package_s=0.5)
    with pytest.raises(ValueError, match="old name"):
        EmulatorSettings(distmgr_delay_s=0.5, distmgr_time_per_package_s=2.0)


@pytest.mark.parametrize("argv", [["--distmgr-threads", "0"], ["--distmgr-time-per-package-s", "-1"]])
def test_bad_distmgr_values_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """DistMgr needs at least one thread and a non-negative time per package."""
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_distribution_point_flags_reach_their_fields() -> None:
    settings = _settings(
        "--dp-count", "20", "--pull-dp-count", "2", "--dp-jobs", "4", "--dp-copy-time-s", "1.5",
        "--pull-dp-copy-factor", "5", "--dp-retry-count", "100", "--dp-retry-delay-s", "1800",
        "--dp-offline", "DP07", "--dp-failing", "DP08", "--dp-failure-share", "0.3",
        "--dp-scheduled", "DP09", "--dp-scheduled", "DP10", "--dp-schedule-period-s", "60",
        "--dp-schedule-open-s", "5",
    )  # fmt: skip
    assert settings == EmulatorSettings(
        password=_PASSWORD,
        dp_count=20,
        pull_dp_count=2,
        dp_jobs=4,
        dp_copy_time_s=1.5,
        pull_dp_copy_factor=5.0,
        dp_retry_count=100,
        dp_retry_delay_s=1800.0,
        dp_offline=("DP07",),
        dp_failing=("DP08",),
        dp_failure_share=0.3,
        dp_scheduled=("DP09", "DP10"),
        dp_schedule_period_s=60.0,
        dp_schedule_open_s=5.0,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dp-offline", "DP09"], "no DP named 'DP09'"),
        (["--dp-count", "2", "--pull-dp-count", "3"], "pull_dp_count"),
    ],
)
def test_a_dp_flag_naming_no_dp_is_rejected(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(*argv)


@pytest.mark.parametrize(
    "argv",
    [["--dp-count", "0"], ["--pull-dp-count", "-1"], ["--dp-failure-share", "1.5"], ["--dp-copy-time-s", "nan"]],
)
def test_bad_dp_values_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(argv)
    assert raised.value.code == 2 and "error:" in capsys.readouterr().err
