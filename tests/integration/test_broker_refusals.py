"""A broker that would take kombu's lossy BRPOP path stops the processes at start, with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from errors import ConfigError
from worker.app import create_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXIT_USAGE = 2
EXIT_CONFIG = 78


def _run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCCM_REFRESH_")}
    return subprocess.run(
        [sys.executable, *argv],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_sentinel_broker_url_stops_the_cli_with_exit_2_and_the_worker_with_exit_78() -> None:
    """Same one line from both: what is refused, why, and what to point the URL at instead."""
    url = "sentinel://:Hunter2-secret@s1:26379;sentinel://s2:26379"
    enqueue = _run("-m", "cli.main", "enqueue", "PS1", "PS100001", SCCM_REFRESH_BROKER_URL=url)
    worker = _run("-m", "cli.main", "worker", "--pool", "solo", SCCM_REFRESH_BROKER_URL=url)
    assert (enqueue.returncode, worker.returncode) == (EXIT_USAGE, EXIT_CONFIG), worker.stderr[-2000:]
    for result in (enqueue, worker):
        (line,) = result.stderr.strip().splitlines()
        assert "broker_url: sentinel:// is not supported" in line and "role:master" in line
        assert "Hunter2-secret" not in line


def test_a_global_key_prefix_set_in_code_stops_the_worker_at_start(redis_url: str) -> None:
    """Transport options are not settings: the worker's start checks them and exits 78 with one line."""
    code = (
        "from worker.app import app\n"
        "app.conf.broker_transport_options = {**app.conf.broker_transport_options, 'global_keyprefix': 'tenant:'}\n"
        "app.worker_main(['worker', '--pool', 'solo'])\n"
    )
    result = _run("-c", code, SCCM_REFRESH_BROKER_URL=redis_url, SCCM_REFRESH_REDIS_URL=redis_url)
    assert result.returncode == EXIT_CONFIG, result.stderr[-2000:]
    assert "global_keyprefix is not supported" in result.stderr and "Traceback" not in result.stderr


def test_the_in_flight_channel_refuses_a_global_key_prefix_instead_of_falling_back(redis_url: str) -> None:
    """The last guard: a channel opened with the option raises rather than take messages with BRPOP."""
    app = create_app(Settings(broker_url=redis_url, redis_url=redis_url))
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": "tenant:"}
    connection = app.connection_for_read()
    try:
        with pytest.raises(ConfigError, match="global_keyprefix is not supported"):
            connection.default_channel  # noqa: B018 - opening the channel is the act under test
    finally:
        connection.release()
