"""Refreshes survive what production throws at them: idle connections dropped by the server,
a worker killed while a request waits for its medium, a Redis restart mid-wait."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

import pytest

from testing.fixtures_pipeline import Pipeline, PipelineFactory
from worker.outcomes import Outcome

pytestmark = pytest.mark.integration

# Redelivery of an unacked message needs the visibility timeout to pass: keep it short here.
SHORT_VISIBILITY_ENV = {
    "SCCM_REFRESH_LIMITS__VISIBILITY_TIMEOUT_S": "6",
    "SCCM_REFRESH_LIMITS__MAX_COUNTDOWN_S": "2",
    "SCCM_REFRESH_TASK_SOFT_TIME_LIMIT_S": "3",
    "SCCM_REFRESH_TASK_TIME_LIMIT_S": "4",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "200",
    "SCCM_REFRESH_RETRY__MEDIUM__INITIAL_BACKOFF_S": "0.5",
    "SCCM_REFRESH_RETRY__MEDIUM__MAX_BACKOFF_S": "1",
}


def test_idle_keepalive_close_is_recovered_by_a_new_session(pipeline_factory: PipelineFactory) -> None:
    """After the server drops an idle NTLM connection, the next refresh resets the session and succeeds."""
    pipeline = pipeline_factory(emulator_overrides={"PS1": {"idle_timeout_s": 0.5}}, concurrency=1)
    emulator = pipeline.emulators["PS1"]
    first = pipeline.package("PS1", pkg_source_flag=2)
    second = pipeline.package("PS1", pkg_source_flag=2, exclude=(first["PackageID"],))
    run = pipeline.refresh(site_code="PS1", package_id=first["PackageID"], package_class=first["class"])
    assert run.final is not None and run.final.status == "accepted"
    closes = emulator.stats.count("idle_closes")
    assert emulator.stats.wait_for("idle_closes", closes + 1, timeout_s=10), "server never closed the idle connection"

    run = pipeline.refresh(site_code="PS1", package_id=second["PackageID"], package_class=second["class"])
    assert run.final is not None and run.final.status == "accepted", run.final and run.final.to_dict()
    assert run.statuses == ["accepted"]  # recovered in-call: no re-queue needed
    # The stale session sent an encrypted request on a fresh connection (HTTP 400), then reset.
    assert emulator.stats.count("encrypted_without_context") >= 1


def test_waiting_refresh_survives_a_worker_crash(pipeline_factory: PipelineFactory) -> None:
    """SIGKILL the worker while a request waits for its medium: a new worker finishes it, once."""
    pipeline = pipeline_factory(worker_extra_env=SHORT_VISIBILITY_ENV, concurrency=2)
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    crashed = threading.Event()

    def crash_on_first_retry(outcome: Outcome) -> None:
        if outcome.status == "retrying" and not crashed.is_set():
            crashed.set()
            # Crash while the re-queued request is held by the worker (unacked, counting down).
            assert wait_until(lambda: held_retry_state(pipeline, outcome.request_id) is not None, timeout_s=5)
            pipeline.worker.kill()
            provider.set_medium_ready(pkg["PackageID"], True)
            pipeline.worker.start()

    run = pipeline.refresh(
        site_code="PS1",
        package_id=pkg["PackageID"],
        package_class=pkg["class"],
        on_event=crash_on_first_retry,
        timeout_s=60,
    )
    assert crashed.is_set()
    assert run.final is not None and run.final.status == "accepted", run.statuses
    assert [o for o in run.stream if o.final] == [run.final]
    # The redelivered message carried the retry state: attempts continue, they do not restart.
    assert run.final.attempt >= 2


def wait_until(condition: Callable[[], bool], *, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll a condition that has no event to wait on (here: broker state), bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def held_retry_state(pipeline: Pipeline, request_id: str) -> dict[str, object] | None:
    """The retry_state of the request's message held unacked by a worker (kombu's 'unacked' hash)."""
    client = pipeline.redis()
    try:
        for raw in client.hvals("unacked"):
            message = json.loads(raw)[0]
            _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            if kwargs.get("request_id") == request_id and kwargs.get("retry_state"):
                state: dict[str, object] = kwargs["retry_state"]
                return state
    finally:
        client.close()
    return None
