"""`sccm-refresh flower` over real workers: refreshes, retries and custom states read back from Flower's API.

One pipeline (real `celery worker`, emulators, Redis) with the tiny state-report task loaded,
watched by our Flower with a basic-auth file. Every route answers 401 without the login.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from ops.flower_config import BASIC_AUTH_FILE_ENV
from testing.chromium import CHROMIUM_MISSING, HeadlessChromium, find_chromium
from testing.fixtures_pipeline import Pipeline, PipelineFactory, RefreshRun
from testing.flower_process import FLOWER_USER, FlowerProcess
from testing.state_report_task import STATE_REPORT_TASK
from testing.waiting import wait_until
from worker.app import REFRESH_TASK
from worker.task_states import WAITING_FOR_MEDIUM

pytestmark = pytest.mark.integration

FLOWER_WAIT_S: Final = 15.0
UNAUTHENTICATED_PATHS: Final = (
    "/",
    "/tasks",
    "/metrics",
    "/healthcheck",
    "/api/tasks",
    "/api/workers",
    "/api/queues/length",
    "/static/css/flower.css",
    "/no-such-page",
)


@dataclass
class Watched:
    pipeline: Pipeline
    flower: FlowerProcess
    accepted: RefreshRun
    retried: RefreshRun

    def task(self, task_id: str) -> dict[str, Any]:
        return self.flower.task_info(task_id)


@pytest.fixture(scope="module")
def watched(pipeline_factory: PipelineFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """A pipeline with the state-report task, our Flower over it, one plain and one retried refresh."""
    tmp = tmp_path_factory.mktemp("flower-ops")
    pipeline = pipeline_factory(worker_args=("--include", "testing.state_report_task"))
    flower = FlowerProcess(pipeline.worker.env, log_file=tmp / "flower.log", auth_file=tmp / "flower-auth").start()
    try:
        plain = pipeline.package("BS1", pkg_source_flag=2)
        accepted = pipeline.refresh(site_code="BS1", package_id=plain["PackageID"], package_class=plain["class"])
        faults = pipeline.emulators["BS1"].faults
        for kind in ("http_503", "timeout_fault", "generic_failure"):
            faults.inject_next(kind)  # the in-call budget of one run: re-queued once, then accepted
        try:
            retried = pipeline.refresh(site_code="BS1", package_id=plain["PackageID"], package_class=plain["class"])
        finally:
            faults.clear()
        yield Watched(pipeline, flower, accepted, retried)
    finally:
        flower.stop()


def test_flower_shows_refresh_tasks_with_names_kwargs_states_and_retries(watched: Watched) -> None:
    """Flower's API (with the login) lists each refresh: task name, its kwargs, SUCCESS, and the retry count."""
    ids = {watched.accepted.request_id, watched.retried.request_id}
    assert watched.accepted.final is not None and watched.retried.final is not None
    assert watched.retried.statuses[0] == "retrying"
    assert wait_until(lambda: all(watched.task(i).get("state") == "SUCCESS" for i in ids), timeout_s=FLOWER_WAIT_S), {
        i: watched.task(i).get("state") for i in ids
    }
    accepted, retried = watched.task(watched.accepted.request_id), watched.task(watched.retried.request_id)
    for info, run in ((accepted, watched.accepted), (retried, watched.retried)):
        assert info["name"] == REFRESH_TASK
        kwargs = ast.literal_eval(info["kwargs"])  # Flower shows Celery's repr of the kwargs
        assert kwargs["site_code"] == "BS1" and kwargs["request_id"] == run.request_id
    assert accepted["retries"] == 0
    assert retried["retries"] == 1 and retried["retried"] is not None
    listed = watched.flower.api("/api/tasks").json()
    assert ids <= set(listed)


def test_every_route_needs_the_login(watched: Watched) -> None:
    """Without a login (or with a wrong one) every route answers 401 with a Basic challenge, /metrics included."""
    flower = watched.flower
    for path in UNAUTHENTICATED_PATHS:
        anonymous = flower.get(path)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm="), path
        assert flower.get(path, auth=(FLOWER_USER, "wrong")).status_code == 401, path
    assert flower.api("/metrics").text.count("flower_events_total") >= 1
    assert flower.api("/healthcheck").text == "OK"


def test_a_reported_custom_state_shows_in_flower_until_the_next_run_starts(watched: Watched) -> None:
    """report_state's WAITING_FOR_MEDIUM and its detail show, kept through the re-queue, then STARTED, SUCCESS."""
    pipeline, task_id, gate = watched.pipeline, f"state-{uuid.uuid4().hex}", f"gate-{uuid.uuid4().hex}"
    detail = "ReturnValue 21: the source medium is not ready"
    pipeline.producer.send_task(
        STATE_REPORT_TASK,
        kwargs={"state": WAITING_FOR_MEDIUM, "detail": detail, "gate": gate},
        task_id=task_id,
        queue=pipeline.queue,
    )
    client = pipeline.outcome_redis()
    try:
        assert wait_until(lambda: watched.task(task_id).get("state") == WAITING_FOR_MEDIUM, timeout_s=FLOWER_WAIT_S)
        assert watched.task(task_id)["result"] == detail
        client.rpush(gate, "open")  # run 1 re-queues itself: task-retried, then task-received
        assert wait_until(lambda: watched.task(task_id).get("retries") == 1, timeout_s=FLOWER_WAIT_S)
        assert watched.task(task_id)["state"] == WAITING_FOR_MEDIUM
        assert wait_until(lambda: watched.task(task_id).get("state") == "STARTED", timeout_s=FLOWER_WAIT_S)
        client.rpush(gate, "open")
        assert wait_until(lambda: watched.task(task_id).get("state") == "SUCCESS", timeout_s=FLOWER_WAIT_S)
    finally:
        client.close()
    listed = watched.flower.api(f"/api/tasks?state={WAITING_FOR_MEDIUM}").json()
    assert task_id not in listed  # the search index follows the state too


def run_flower_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "flower", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_flower_refuses_to_start_without_credentials() -> None:
    """No basic-auth file and no --insecure-no-auth: exit 2 with one line saying what to pass."""
    env = {k: v for k, v in os.environ.items() if k != BASIC_AUTH_FILE_ENV}
    result = run_flower_command("--port", "0", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--basic-auth-file" in result.stderr


def test_flower_refuses_to_run_without_auth_off_loopback() -> None:
    """--insecure-no-auth on every interface is refused: exit 2, one line."""
    every_interface = "0.0.0.0"  # noqa: S104 - the address under test; the command refuses to bind it
    result = run_flower_command("--insecure-no-auth", "--address", every_interface, "--port", "0")
    assert result.returncode == 2
    assert "refused" in result.stderr and "Traceback" not in result.stderr


def test_flower_names_a_bad_credentials_line_without_echoing_it(tmp_path: Path) -> None:
    """A line without user:password is named by number; its content (maybe a password) is not printed."""
    auth = tmp_path / "auth"
    auth.write_text("# logins\nadmin-without-colon-Secret123\n", encoding="utf-8")
    result = run_flower_command("--basic-auth-file", str(auth), "--port", "0")
    assert result.returncode == 2
    assert "line 2: expected user:password" in result.stderr
    assert "Secret123" not in result.stderr


def test_flower_page_in_headless_chromium_signs_in_and_lists_the_refresh_tasks(
    watched: Watched, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Chromium gets Flower's Basic challenge, signs in, and the tasks page lists the refreshes and a custom state."""
    if find_chromium() is None:
        pytest.skip(CHROMIUM_MISSING)
    tmp = tmp_path_factory.mktemp("chromium")
    pipeline, task_id, gate = watched.pipeline, f"state-{uuid.uuid4().hex}", f"gate-{uuid.uuid4().hex}"
    pipeline.producer.send_task(
        STATE_REPORT_TASK,
        kwargs={"state": WAITING_FOR_MEDIUM, "detail": "medium not ready (shown in the browser)", "gate": gate},
        task_id=task_id,
        queue=pipeline.queue,
    )
    client = pipeline.outcome_redis()
    try:
        assert wait_until(lambda: watched.task(task_id).get("state") == WAITING_FOR_MEDIUM, timeout_s=FLOWER_WAIT_S)
        with HeadlessChromium(tmp / "profile") as browser:
            browser.open(f"{watched.flower.base_url}/tasks", login=watched.flower.login)
            expected = [watched.accepted.request_id, watched.retried.request_id, REFRESH_TASK, WAITING_FOR_MEDIUM]
            seen = browser.wait_for_text(expected, timeout_s=FLOWER_WAIT_S)
            shot = browser.screenshot(tmp / "flower-tasks.png")
            page = browser.text()
            challenges = browser.auth_challenges
    finally:
        client.rpush(gate, "open", "open")
        client.close()
    print(f"screenshot: {shot}")
    assert seen, page[:2000]
    assert challenges >= 1, "the page loaded without asking for the login"
    assert shot.stat().st_size > 10_000
    assert "medium not ready (shown in the browser)" in page


def test_headless_chromium_without_the_login_gets_no_page(
    watched: Watched, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A browser that cancels the challenge sees only the 401 text, no task data."""
    if find_chromium() is None:
        pytest.skip(CHROMIUM_MISSING)
    with HeadlessChromium(tmp_path_factory.mktemp("chromium-anonymous") / "profile") as browser:
        browser.open(f"{watched.flower.base_url}/tasks")
        assert browser.wait_for_text(["authentication required"], timeout_s=FLOWER_WAIT_S), browser.text()[:500]
        assert watched.accepted.request_id not in browser.text()


def test_a_refresh_waiting_for_its_medium_shows_as_waiting_in_flower(watched: Watched) -> None:
    """The refresh use case reports WAITING_FOR_MEDIUM while a STORAGE_COMPRESS medium is not ready."""
    pipeline, flower = watched.pipeline, watched.flower
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    request_id = pipeline.send({"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]})
    try:

        def waiting() -> bool:
            listed = flower.api(f"/api/tasks?state={WAITING_FOR_MEDIUM}").json()
            return request_id in listed

        assert wait_until(waiting, timeout_s=20)
        task = flower.api(f"/api/tasks?state={WAITING_FOR_MEDIUM}").json()[request_id]
        assert "medium_not_ready" in str(task.get("result"))
    finally:
        provider.set_medium_ready(pkg["PackageID"], True)
    assert wait_until(lambda: request_id in pipeline.finals(), timeout_s=30)
