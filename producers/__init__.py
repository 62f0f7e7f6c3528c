"""The producers: what the API, the CLI and Python callers use to ask for refreshes.

    enqueue.py         one refresh: validate (the task's own model), stamp its ids, send by name
    celery_message.py  a Celery protocol 2 message built without Celery (the API's LPUSH)
    bulk.py            a bulk job: validate, record, start; read; cancel

Apart from the Celery tasks (tasks/) and the worker's runtime: importing a producer pulls in
neither the worker's Celery app nor pywinrm (tests/unit/test_usecase_purity.py checks it). A
producer sends through the caller's Celery app, or pushes the message itself.
"""

from producers.bulk import BulkSubmission, cancel_bulk, enqueue_bulk, get_bulk, new_bulk_id
from producers.celery_message import task_message
from producers.enqueue import enqueue_refresh, new_request_id, prepare_refresh, send_refresh, stamp_refresh

__all__ = [
    "BulkSubmission",
    "cancel_bulk",
    "enqueue_bulk",
    "enqueue_refresh",
    "get_bulk",
    "new_bulk_id",
    "new_request_id",
    "prepare_refresh",
    "send_refresh",
    "stamp_refresh",
    "task_message",
]
