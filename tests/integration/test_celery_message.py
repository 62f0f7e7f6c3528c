"""The API's hand-built task message is the one Celery's `send_task` writes, key for key."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from config.settings import Settings
from producers.celery_message import task_message
from producers.enqueue import enqueue_refresh
from worker.app import REFRESH_TASK, create_app

pytestmark = pytest.mark.integration


def test_a_hand_built_message_matches_celerys_own(redis_url: str) -> None:
    """Same envelope keys, headers, properties shape and body: a worker cannot tell them apart."""
    app = create_app(Settings(broker_url=redis_url, redis_url=redis_url, queue="q-compare"))
    app.conf.task_send_sent_event = False
    request, _ = enqueue_refresh(app, queue="q-compare", site_code="PS1", package_id="PS100001")
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.rpop("q-compare")
    finally:
        client.close()
    assert isinstance(raw, bytes)
    celerys = json.loads(raw)
    ours = json.loads(
        task_message(REFRESH_TASK, str(request.request_id), request.model_dump(mode="json"), queue="q-compare")
    )
    assert ours.keys() == celerys.keys()
    assert ours["headers"].keys() == celerys["headers"].keys()
    assert ours["properties"].keys() == celerys["properties"].keys()
    for name in ("task", "id", "root_id", "retries", "timelimit", "lang", "argsrepr"):
        assert ours["headers"][name] == celerys["headers"][name], name
    assert ours["properties"]["delivery_info"] == celerys["properties"]["delivery_info"]
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(celerys["body"]))
