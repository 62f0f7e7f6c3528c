"""A refresh sent without routing lands in Celery's default queue: it is reported, not silent."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery

from testing.fixtures_pipeline import Pipeline
from testing.waiting import wait_until
from worker.app import REFRESH_TASK
from worker.misrouting import DEFAULT_CELERY_QUEUE, count_misrouted

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
