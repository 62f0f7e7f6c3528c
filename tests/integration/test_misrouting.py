"""A refresh sent without routing lands in Celery's default queue: it is reported, not silent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import Celery

from testing.fixtures_pipeline import Pipeline
from testing.waiting import wait_until
from worker.app import REFRESH_TASK
from worker.broker.misrouting import DEFAULT_CELERY_QUEUE, count_misrouted

pytestmark = pytest.mark.integration


def test_a_message_in_celerys_default_queue_is_counted_and_the_worker_warns(pipeline: Pipeline) -> None:
    """A plain Celery client with no routing: the worker logs the count and the queue to use."""
    naive = Celery("naive-producer", broker=pipeline.redis_url)  # no task_routes, no queue: the default one
    naive.send_task(REFRESH_TASK, kwargs={"site_code": "BS1", "package_id": "BS100001"}, task_id=str(uuid.uuid4()))
    client = pipeline.redis()
    try:
        found = count_misrouted(client)
        assert found.queue == DEFAULT_CELERY_QUEUE and found.ours >= 1 and found.estimated_ours >= 1
        pipeline.worker.stop()
        pipeline.worker.start()  # the check runs when a worker becomes ready (then every 5 minutes)
        assert wait_until(lambda: "wait in Celery's default queue 'celery'" in pipeline.worker.output(), timeout_s=20)
        assert f"send them to queue {pipeline.queue!r}" in pipeline.worker.output()
    finally:
        client.delete(DEFAULT_CELERY_QUEUE)
        client.close()


def test_doctor_names_misrouted_messages_and_fails_until_they_are_gone(pipeline: Pipeline) -> None:
    """`sccm-refresh doctor`: one line per check, exit 1 while our tasks sit in Celery's default queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCCM_REFRESH_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        SCCM_REFRESH_BROKER_URL=pipeline.redis_url,
        SCCM_REFRESH_REDIS_URL=pipeline.redis_url,
        SCCM_REFRESH_QUEUE=pipeline.queue,
        SCCM_REFRESH_KEY_PREFIX=pipeline.keys.prefix,
    )

    def doctor() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cli.main", "doctor"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    naive = Celery("naive-producer", broker=pipeline.redis_url)
    naive.send_task(REFRESH_TASK, kwargs={"site_code": "BS1", "package_id": "BS100001"}, task_id=str(uuid.uuid4()))
    client = pipeline.redis()
    try:
        sick = doctor()
        assert sick.returncode == 1, sick.stdout + sick.stderr
        assert "FAIL 1 sccm.* message(s) in Celery's default queue 'celery'" in sick.stdout
        assert f"send to queue {pipeline.queue!r}" in sick.stdout
        client.delete(DEFAULT_CELERY_QUEUE)
        well = doctor()
    finally:
        client.delete(DEFAULT_CELERY_QUEUE)
        client.close()
    assert well.returncode == 0, well.stdout + well.stderr
    assert "FAIL" not in well.stdout and "Traceback" not in well.stderr
    assert re.search(r"^ok   broker Redis \d+\.\d+", well.stdout, re.MULTILINE)
    assert f"worker(s) consuming {pipeline.queue!r}: " in well.stdout
