"""Refreshes survive what production throws at them: idle connections dropped by the server,
a worker killed while a request waits for its medium, a Redis restart mid-wait."""

from __future__ import annotations

import json
import threading

import pytest

from testing.fixtures_pipeline import SHORT_VISIBILITY_ENV, UNACKED_HASH, Pipeline, PipelineFactory, message_kwargs
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration


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
            # ... and only that copy: the first delivery's message is acked once the retry is out.
            assert wait_until(lambda: only_retry_copies_held(pipeline, outcome.request_id), timeout_s=5)
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


def only_retry_copies_held(pipeline: Pipeline, request_id: str) -> bool:
    """The request is held unacked, and every held copy carries its retry state (none is the first delivery)."""
    client = pipeline.redis()
    try:
        held = [message_kwargs(json.loads(raw)[0]) for raw in client.hvals(UNACKED_HASH)]
    finally:
        client.close()
    copies = [kwargs for kwargs in held if kwargs.get("request_id") == request_id]
    return bool(copies) and all(kwargs.get("retry_state") for kwargs in copies)
