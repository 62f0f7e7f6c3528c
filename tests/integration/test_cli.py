"""The `sccm-refresh` command as a user runs it: real processes, real Redis, the emulator."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.cli_process import clean_env, pipeline_env, run_cli
from testing.fixtures_pipeline import Pipeline
from worker.domain.criteria import DEFAULT_PACKAGE_CLASSES
from worker.domain.outcomes import OUTCOME_SCHEMA_VERSION

pytestmark = pytest.mark.integration


def test_enqueue_refuses_a_bad_package_id_with_one_line_and_exit_2() -> None:
    """Bad input is a one-line error naming the field, exit code 2, no traceback, nothing sent."""
    result = run_cli("enqueue", "PS1", "PS100001", "PS1' OR 1=1", env=clean_env())
    assert result.returncode == 2
    assert "package_id" in result.stderr and "nothing was enqueued" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def _first_line(process: subprocess.Popen[str], *, timeout_s: float) -> str:
    """The first line the process writes to stderr, read unbuffered so communicate() still gets the rest."""
    assert process.stderr is not None
    fd, line, deadline = process.stderr.fileno(), b"", time.monotonic() + timeout_s
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"nothing on stderr within {timeout_s} s (so far: {line!r})"
        byte = os.read(fd, 1)
        assert byte, f"stderr closed after {line!r}"
        line += byte
    return line.decode()


def test_enqueue_sends_requests_that_the_worker_completes(pipeline: Pipeline) -> None:
    """`sccm-refresh enqueue` prints one JSON line per request; each reaches a final outcome."""
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    env = clean_env(
        SCCM_REFRESH_BROKER_URL=pipeline.redis_url,
        SCCM_REFRESH_REDIS_URL=pipeline.redis_url,
        SCCM_REFRESH_QUEUE=pipeline.queue,
        SCCM_REFRESH_KEY_PREFIX=pipeline.keys.prefix,
    )
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "watch", "--count", "1", "--timeout-s", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Enqueue only once `watch` says it is subscribed, so its one final outcome is ours.
        assert _first_line(watcher, timeout_s=20).startswith("watch: listening on ")
        client = pipeline.redis()
        try:
            # A stray message on the channel must not kill the watcher.
            assert client.publish(pipeline.keys.outcome_channel, "not an outcome") == 1
        finally:
            client.close()
        result = run_cli("enqueue", "bs1", pkg["PackageID"].lower(), "--class", pkg["class"], env=env)
        assert result.returncode == 0, result.stderr
        sent = json.loads(result.stdout.strip())
        assert sent["site_code"] == "BS1" and sent["package_id"] == pkg["PackageID"]
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert f"BS1/{pkg['PackageID']}" in out and "accepted" in out
    assert f"skipped a message that is not a v{OUTCOME_SCHEMA_VERSION} outcome" in err and "Traceback" not in err


def test_demo_runs_end_to_end_with_an_embedded_redis_and_leaves_nothing_running(tmp_path: Path) -> None:
    """`sccm-refresh demo`: its own Redis, emulator, two workers, API and Flower; a bulk through the API."""
    result = run_cli(
        "demo",
        "--packages",
        "60",
        "--medium-ready-after-s",
        "2",
        "--timeout-s",
        "90",
        env=clean_env(),
        cwd=tmp_path,
        timeout_s=180,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "embedded redis-server" in out and "[api]" in out and "[flower]" in out
    assert "through POST /v1/bulk-refreshes" in out and "joined a pending refresh" in out
    assert "demo: OK, every request has exactly one final outcome" in out
    assert (tmp_path / ".sccm-refresh").is_dir()
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)|worker pid (\d+)", out) for pid in pid if pid]
    assert len(pids) == 3  # the Redis server and two workers
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("command", [("enqueue", "PS1", "PS100001"), ("watch", "--count", "1")])
def test_unreachable_redis_is_one_clear_line_with_the_password_redacted(command: tuple[str, ...]) -> None:
    """No Redis where configured: exit 69 (EX_UNAVAILABLE) and one line, fast, no traceback, no password."""
    dead = f"redis://:{'Hunter2-secret'}@127.0.0.1:{free_port()}/0"
    result = run_cli(*command, env=clean_env(SCCM_REFRESH_BROKER_URL=dead, SCCM_REFRESH_REDIS_URL=dead), timeout_s=30)
    assert result.returncode == 69
    assert "did not answer PING" in result.stderr and "Traceback" not in result.stderr
    assert "Hunter2-secret" not in result.stderr + result.stdout


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_worker_with_invalid_settings_exits_78_with_one_line() -> None:
    """`celery -A worker.app worker` with a bad setting names it on stderr and exits EX_CONFIG."""
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo"],
        env=clean_env(
            SCCM_REFRESH_PROVIDERS__PS1__ENDPOINT="ftp://sccm01",
            SCCM_REFRESH_PROVIDERS__PS1__USERNAME="u",
            SCCM_REFRESH_PROVIDERS__PS1__PASSWORD="Hunter2-secret",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr[-2000:]
    assert "providers.ps1.endpoint: endpoint must be an http:// or https:// WS-Man URL" in result.stderr
    assert "Traceback" not in result.stderr and "Hunter2-secret" not in result.stderr


def test_bulk_refuses_hostile_criteria_with_one_line_and_exit_2() -> None:
    """A pattern with a control character is refused before anything is recorded or sent."""
    result = run_cli("bulk", "PS1", "--name", "Dell\x07*", "--id", "PS1' OR 1=1", env=clean_env())
    assert result.returncode == 2, result.stderr
    assert "name_pattern" in result.stderr and "package_ids" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout and result.stdout == ""


def test_bulk_naming_application_content_is_refused_in_one_line_without_redis() -> None:
    """`--class SMS_ContentPackage`: exit 2, one line saying why, before any Redis is asked."""
    nowhere = "redis://127.0.0.1:1/0"
    env = clean_env(SCCM_REFRESH_BROKER_URL=nowhere, SCCM_REFRESH_REDIS_URL=nowhere)
    result = run_cli("bulk", "PS1", "--class", "SMS_ContentPackage", env=env)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "SMS_ContentPackage" in line and "deployment type" in line and "verified" in line


def test_bulk_runs_waits_and_reports_counts_then_status_reads_them_back(pipeline: Pipeline) -> None:
    """`bulk --wait` prints the bulk id, follows it to the end, and `status --json` agrees."""
    env = pipeline_env(pipeline)
    packages = pipeline.emulators["BS1"].provider.packages()
    plain = [p["PackageID"] for p in packages if p["PkgSourceFlag"] == 2 and p["class"] in DEFAULT_PACKAGE_CLASSES][:5]
    args = ["bulk", "BS1", *(f"--id={pid}" for pid in plain), "--wait", "--timeout-s", "60"]
    result = run_cli(*args, env=env, timeout_s=90)
    assert result.returncode == 0, result.stderr
    bulk_id = json.loads(result.stdout.splitlines()[0])["bulk_id"]
    assert "done" in result.stderr and "accepted" in result.stderr
    status = run_cli("status", bulk_id, "--json", env=env)
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert record["state"] == "done" and record["total"] == len(plain) and record["counts"] == {"accepted": len(plain)}


def test_bulk_dry_run_lists_packages_and_status_and_cancel_handle_unknown_ids(pipeline: Pipeline) -> None:
    """A dry run prints what it would refresh; an unknown bulk id is exit 1 with one line."""
    env = pipeline_env(pipeline)
    result = run_cli("bulk", "BS1", "--class", "SMS_Package", "--dry-run", env=env, timeout_s=60)
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout.splitlines()[0])
    assert accepted["dry_run"] is True and accepted["package_classes"] == ["SMS_Package"]
    assert "selected" in result.stderr and re.search(r"classes\s.*SMS_Package", result.stderr)
    default = run_cli("bulk", "BS1", "--dry-run", env=env, timeout_s=60)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout.splitlines()[0])["package_classes"] == ["SMS_Package", "SMS_DriverPackage"]
    for command in ("status", "cancel"):
        unknown = run_cli(command, "bulk-does-not-exist", env=env)
        assert unknown.returncode == 1 and "no bulk job" in unknown.stdout and "Traceback" not in unknown.stderr
