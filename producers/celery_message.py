"""A Celery protocol 2 task message, as kombu's Redis transport stores it: built without Celery.

The HTTP API publishes refresh requests with one async LPUSH instead of a blocking
`send_task` in a thread (Celery builds the message, then kombu makes a Redis client per publish:
most of a request's cost). The layout is Celery's documented message protocol v2 (the one
non-Python producers such as celery-node speak) inside kombu's Redis envelope; a test compares
it, key by key, with what `send_task` writes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["task_message"]

_ORIGIN: Final = f"gen{os.getpid()}@{socket.gethostname()}"
_EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(task: str, task_id: str, kwargs: Mapping[str, Any], *, queue: str) -> str:
    """The JSON a worker consuming `queue` takes as a call of `task(**kwargs)` with this task id."""
    body = json.dumps([[], dict(kwargs), _EMBED]).encode("utf-8")
    message = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": repr(dict(kwargs)),
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message)
