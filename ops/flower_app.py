"""`sccm-refresh flower`: Flower for our app, every route behind HTTP Basic authentication.

Flower 2.x with `--basic-auth` still serves `/metrics` and `/healthcheck` (and its static files
and error pages) to anyone. Here one gate sits in front of Flower's router: a request without a
valid `Authorization: Basic` header gets 401 whatever it asks for. Flower's own basic-auth
checks stay on behind it (its API then also works, and its cross-site request checks apply).

Credentials come from a file (`--basic-auth-file`, or `SCCM_REFRESH_FLOWER_BASIC_AUTH_FILE`),
one `user:password` a line, never from the command line (visible in `ps`). Without credentials
it refuses to start, unless told `--insecure-no-auth` AND bound to a loopback address; Flower's
API then stays closed (401), as Flower does without auth.

Task events: custom states a worker reports (worker/task_states.py) stay shown through the
`task-sent` / `task-received` / `task-retried` events of the re-queue that follows them, until
the next `task-started` or the end of the task: `StickyStatesEventsState`.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import hmac
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

import tornado.web
from celery.events.state import TASK_EVENT_TO_STATE
from flower.app import Flower
from flower.events import EventsState
from flower.options import default_options
from flower.urls import settings as flower_settings
from tornado.httputil import HTTPServerRequest

from ops.flower_config import FlowerConfig
from worker.task_states import is_custom_state

__all__ = [
    "AuthenticatedFlower",
    "StickyStatesEventsState",
    "build_flower",
    "run_flower",
]

log = logging.getLogger(__name__)

REALM: Final = "sccm-refresh flower"
# What an operator needs in the task list: name, state, kwargs (no secrets by design), the
# custom state's detail (Result), retries.
TASKS_COLUMNS: Final = "name,uuid,state,retries,result,kwargs,received,started,runtime,worker"
# Celery's events that leave a request waiting for what its custom state said.
_STILL_WAITING_EVENTS: Final = frozenset({"task-sent", "task-retried", "task-received"})
_CUSTOM_SINCE: Final = "custom_state_since"  # task attribute: when its custom state was reported


def _basic_login(request: HTTPServerRequest) -> bytes | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


class _Unauthorized(tornado.web.RequestHandler):
    """401 with a Basic challenge, for any method and path."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def prepare(self) -> None:
        self.set_status(401)
        self.set_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("authentication required\n")


class AuthenticatedFlower(Flower):  # type: ignore[misc]  # flower ships no type information
    """Flower whose every route (metrics, healthcheck, static files, 404s included) needs a login."""

    def __init__(self, *args: Any, credentials: Sequence[str], **kwargs: Any) -> None:
        self._logins = tuple(c.encode("utf-8") for c in credentials)
        super().__init__(*args, **kwargs)

    def authorized(self, request: HTTPServerRequest) -> bool:
        if not self._logins:
            return True  # --insecure-no-auth on loopback
        login = _basic_login(request)
        if login is None:
            return False
        # Compare with every login (no early exit), in constant time for each.
        matches = [hmac.compare_digest(login, expected) for expected in self._logins]
        return any(matches)

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        if not self.authorized(request):
            return self.get_handler_delegate(request, _Unauthorized)
        return super().find_handler(request, **kwargs)


class StickyStatesEventsState(EventsState):  # type: ignore[misc]  # flower ships no type information
    """Flower's event state, where a custom state outlives the re-queue and redelivery that follow it.

    The worker may send its own task events late (it buffers them), so a `task-started` can
    arrive after the custom state the running task reported: an event stamped before the custom
    state never replaces it.
    """

    def event(self, event: dict[str, Any]) -> None:
        event_type = str(event.get("type", ""))
        task = self.tasks.get(event.get("uuid")) if event_type.startswith("task-") else None
        before = task.state if task is not None else None
        custom_since = getattr(task, _CUSTOM_SINCE, None)
        super().event(event)
        task = self.tasks.get(event.get("uuid")) if event_type.startswith("task-") else None
        if task is None:
            return
        stamp = _timestamp(event)
        own = TASK_EVENT_TO_STATE.get(event_type.removeprefix("task-"))
        if own is None:
            if is_custom_state(task.state):  # this event reported it
                setattr(task, _CUSTOM_SINCE, stamp)
            return
        if not is_custom_state(before):
            return
        stale = custom_since is not None and stamp is not None and stamp < custom_since
        # Celery ranks a custom state above STARTED/REVOKED/REJECTED and would keep it; it would
        # replace it with RETRY/RECEIVED. Here: a newer event of the task moving on wins, one
        # that leaves the request waiting (or an older one) does not.
        task.state = before if stale or event_type in _STILL_WAITING_EVENTS else own
        self.search_engine.upsert(task)


def _timestamp(event: dict[str, Any]) -> float | None:
    value = event.get("timestamp")
    return float(value) if isinstance(value, int | float) else None


def build_flower(capp: Any, config: FlowerConfig) -> AuthenticatedFlower:
    """The Tornado application (not yet listening): Flower's options set from `config`."""
    options = default_options
    options.address = config.address
    options.port = config.port
    options.basic_auth = list(config.credentials)
    options.max_tasks = config.max_tasks
    options.url_prefix = config.url_prefix
    options.xheaders = config.xheaders
    options.read_only = config.read_only
    options.purge_offline_workers = config.purge_offline_workers_s
    options.tasks_columns = TASKS_COLUMNS
    options.persistent = False
    settings = dict(flower_settings)
    if config.url_prefix:
        prefix = "/" + config.url_prefix.strip("/")
        settings["login_url"] = prefix + "/login"
        settings["static_url_prefix"] = prefix + "/static/"
    app = AuthenticatedFlower(capp=capp, options=options, credentials=config.credentials, **settings)
    app.events.state = StickyStatesEventsState(max_tasks_in_memory=config.max_tasks)
    return app


def run_flower(capp: Any, config: FlowerConfig) -> int:
    """Listen, print where, and serve until SIGTERM / Ctrl-C."""
    flower = build_flower(capp, config)
    atexit.register(flower.stop)

    def on_sigterm(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: shutting down", signum)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    # Successful requests are not logged (every health check would be); refusals and errors are.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    port = flower.start_http_server()
    auth = f"basic auth ({len(config.credentials)} login(s))" if config.credentials else "NO AUTH (loopback only)"
    where = config.address or "every interface"
    log.info("Flower on %s port %s (path /%s), %s", where, port, config.url_prefix.strip("/"), auth)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        flower.start()
    return 0
