"""`python -m emulator` as a real process: banner, a real request, clean exit on signals, bad flags."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import requests
from winrm.exceptions import WSManFaultError

from config.settings import ProviderSettings
from emulator.cli import PASSWORD_ENV
from errors import NotFoundError
from testing.fixtures_emulator import EMULATOR_USERNAME, winrm_protocol_for_url
from testing.fixtures_kdc import KERBEROS_ACCOUNT, KerberosRealm
from testing.wsman_requests import get_envelope
from worker.provider import kerberos as worker_kerberos
from worker.provider.transport import ProviderTransport

pytestmark = pytest.mark.integration

_BANNER_TIMEOUT_S = 20.0
_EXIT_TIMEOUT_S = 10.0


def _environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != PASSWORD_ENV}
    return {**env, **extra}


def _read_banner(process: subprocess.Popen[str]) -> dict[str, str]:
    """Banner lines as {first word: rest}, up to the last one ("site ..."), within a deadline."""
    assert process.stdout is not None
    stdout = process.stdout
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        with contextlib.suppress(ValueError, OSError):  # the pipe closes at teardown
            for line in stdout:
                lines.put(line)

    # A reader thread: a buffered pipe cannot be polled line by line with select().
    threading.Thread(target=pump, daemon=True).start()
    banner: dict[str, str] = {}
    deadline = time.monotonic() + _BANNER_TIMEOUT_S
    while "site" not in banner:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            pytest.fail(f"no banner from the emulator in time (exit status {process.poll()})")
        key, _, rest = line.partition(" ")
        banner[key.rstrip(":")] = rest.strip()
    return banner


@pytest.fixture
def run_emulator() -> Iterator[list[subprocess.Popen[str]]]:
    """Collects started emulator processes and kills any still running after the test."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(_EXIT_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()


def _start(
    processes: list[subprocess.Popen[str]], *args: str, env: dict[str, str], stderr: TextIO | None = None
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", "0", "--packages", "5", *args]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    processes.append(process)
    return process


def test_cli_serves_requests_and_exits_0_on_sigterm(run_emulator: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """The process prints its endpoint, answers a pywinrm request, and exits 0 on SIGTERM."""
    password = "Cli-Test-Pa55word"
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n", encoding="utf-8")
    process = _start(
        run_emulator,
        "--auth", "basic", "--allow-unencrypted", "--password-file", str(password_file),
        "--username", EMULATOR_USERNAME,
        env=_environment(),
    )  # fmt: skip
    banner = _read_banner(process)
    url = banner["WS-Man"].removeprefix("endpoint: ")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/wsman")
    assert "--password-file" in banner["credentials"]
    assert password not in "".join(banner.values())
    protocol = winrm_protocol_for_url(url, password=password)
    # An unknown package: the reply is the provider's not-found fault, proving the full path works.
    with pytest.raises(WSManFaultError) as raised:
        protocol.send_message(get_envelope(url, "PS1", "PS1FFFFF"))
    assert raised.value.wsman_fault_code == 2150858752
    process.send_signal(signal.SIGTERM)
    assert process.wait(_EXIT_TIMEOUT_S) == 0


def test_cli_generated_password_and_self_signed_tls_then_ctrl_c(run_emulator: list[subprocess.Popen[str]]) -> None:
    """Without a password one is generated and printed; --tls self-signed prints a CA that validates."""
    process = _start(run_emulator, "--tls", "self-signed", env=_environment())
    banner = _read_banner(process)
    password = banner["credentials"].rsplit("generated password: ", 1)[1]
    ca_path = banner["CA"].rsplit(": ", 1)[1]
    admin_url = banner["admin"].removeprefix("API: ").split(" ", 1)[0]
    assert admin_url.startswith("https://")
    with requests.Session() as session:
        session.trust_env = False
        session.verify = ca_path
        session.auth = ("LAB\\sccm-svc", password)
        assert session.get(admin_url + "health", timeout=5).json()["status"] == "ok"
    process.send_signal(signal.SIGINT)
    assert process.wait(_EXIT_TIMEOUT_S) == 0
    assert not Path(ca_path).exists()


def test_cli_at_debug_never_logs_ntlm_tokens(run_emulator: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """--log-level DEBUG logs requests, but not pyspnego's handshake tokens (a crackable NetNTLMv2 hash)."""
    password = "Cli-Debug-Pa55word"
    log_path = tmp_path / "stderr.log"
    # A file, not a pipe: a DEBUG run must never block on a full pipe nobody reads.
    with log_path.open("w", encoding="utf-8") as log_file:
        process = _start(
            run_emulator,
            "--auth", "ntlm", "--log-level", "DEBUG", "--username", EMULATOR_USERNAME,
            env=_environment(**{PASSWORD_ENV: password}),
            stderr=log_file,
        )  # fmt: skip
        url = _read_banner(process)["WS-Man"].removeprefix("endpoint: ")
        with pytest.raises(WSManFaultError):
            winrm_protocol_for_url(url, transport="ntlm", password=password).send_message(
                get_envelope(url, "PS1", "PS1FFFFF")
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(_EXIT_TIMEOUT_S) == 0
    log = log_path.read_text(encoding="utf-8")
    assert "DEBUG emulator.server" in log  # DEBUG was really on
    assert "step input" not in log and "step output" not in log
    assert "TlRMTVNTUA" not in log  # base64 of "NTLMSSP"


def test_cli_password_from_environment(run_emulator: list[subprocess.Popen[str]]) -> None:
    """SCCM_EMULATOR_PASSWORD is used and named as the source, never printed."""
    secret = "Env-Pa55word-xyz"
    process = _start(run_emulator, env=_environment(**{PASSWORD_ENV: secret}))
    banner = _read_banner(process)
    assert PASSWORD_ENV in banner["credentials"]
    assert secret not in "".join(banner.values())
    process.send_signal(signal.SIGTERM)
    assert process.wait(_EXIT_TIMEOUT_S) == 0


@pytest.mark.parametrize(
    ("flag", "value"), [("--latency-ms", "fast"), ("--fault-rate", "meteor=1"), ("--tls", "files")]
)
def test_cli_bad_flag_exits_2_with_a_message(flag: str, value: str) -> None:
    """A bad flag value exits with status 2 and an argparse message, never a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "emulator", flag, value],
        capture_output=True,
        text=True,
        timeout=_BANNER_TIMEOUT_S,
        env=_environment(),
        check=False,
    )
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_distmgr_flags_configure_the_queue_model(run_emulator: list[subprocess.Popen[str]]) -> None:
    """--distmgr-threads and --distmgr-time-per-package-s show in GET /admin/distmgr."""
    password = "Cli-DistMgr-Pa55word"
    process = _start(
        run_emulator,
        "--distmgr-threads", "4", "--distmgr-time-per-package-s", "1.5", "--username", EMULATOR_USERNAME,
        env=_environment(**{PASSWORD_ENV: password}),
    )  # fmt: skip
    admin_url = _read_banner(process)["admin"].removeprefix("API: ").split(" ", 1)[0]
    with requests.Session() as session:
        session.trust_env = False
        session.auth = (EMULATOR_USERNAME, password)
        state = session.get(admin_url + "distmgr", timeout=5).json()
    assert (state["threads"], state["time_per_package_s"], state["held"], state["queued"]) == (4, 1.5, False, 0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(_EXIT_TIMEOUT_S) == 0


def test_cli_accepts_kerberos_from_a_keytab(
    run_emulator: list[subprocess.Popen[str]], kerberos_realm: KerberosRealm
) -> None:
    """`--auth kerberos --kerberos-keytab`, the realm from KRB5_CONFIG: the worker's transport gets an
    answer (the provider's not-found fault for an unknown package) over Kerberos with encryption."""
    process = _start(
        run_emulator,
        "--auth", "kerberos", "--kerberos-keytab", str(kerberos_realm.service_keytab),
        "--username", KERBEROS_ACCOUNT, "--password", "admin-api-only",
        env=_environment(**kerberos_realm.env),
    )  # fmt: skip
    url = _read_banner(process)["WS-Man"].removeprefix("endpoint: ").replace("127.0.0.1", "localhost")
    worker_kerberos.forget_logons()
    settings = ProviderSettings(
        endpoint=url, transport="kerberos", username=kerberos_realm.principal, keytab_file=kerberos_realm.client_keytab
    )
    transport = ProviderTransport("PS1", settings)
    try:
        with pytest.raises(NotFoundError):
            transport.send(get_envelope(url, "PS1", "PS1FFFFF").encode())
    finally:
        transport.close()
        worker_kerberos.forget_logons()
    process.send_signal(signal.SIGTERM)
    assert process.wait(_EXIT_TIMEOUT_S) == 0


def test_cli_refuses_kerberos_without_a_keytab(run_emulator: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    """--auth kerberos alone: a usage error naming the missing flag, exit 2, no traceback."""
    with (tmp_path / "stderr.log").open("w", encoding="utf-8") as log_file:
        process = _start(run_emulator, "--auth", "kerberos", env=_environment(), stderr=log_file)
        assert process.wait(_EXIT_TIMEOUT_S) == 2
    stderr = (tmp_path / "stderr.log").read_text(encoding="utf-8")
    assert "--kerberos-keytab" in stderr and "Traceback" not in stderr
