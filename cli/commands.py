"""The small CLI commands: enqueue requests, watch outcomes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from config.settings import get_settings
from embedded.redis_server import require_redis
from errors import InvalidRequestError
from producers.enqueue import enqueue_refresh
from worker.app import app
from worker.domain.outcomes import OUTCOME_SCHEMA_VERSION, InvalidOutcomeError, Outcome
from worker.domain.request import parse_request
from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import subscribe
from worker.stores.redis_client import redis_from_url

__all__ = ["enqueue", "format_outcome", "watch"]

_REDIS_HINT = "is it running? (set SCCM_REFRESH_BROKER_URL and SCCM_REFRESH_REDIS_URL)"


def enqueue(
    site_code: str,
    package_ids: Sequence[str],
    *,
    package_class: str,
    correlation_id: str | None,
    verify: bool,
    force: bool,
    until: str | None = None,
    redistribute_failed: bool = False,
) -> int:
    """Validate every request first (all or nothing), then enqueue; print one JSON line each."""
    validated = []
    for package_id in package_ids:
        try:
            validated.append(
                parse_request(
                    {
                        "site_code": site_code,
                        "package_id": package_id,
                        "package_class": package_class,
                        "correlation_id": correlation_id,
                        "verify": verify,
                        "until": until,
                        "redistribute_failed": redistribute_failed,
                        "force": force,
                    }
                )
            )
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{exc.message} (nothing was enqueued)") from None
    settings = get_settings()
    # Fail fast, in one line, when Redis is not there (Celery would retry for a minute first).
    require_redis(settings.broker_url, hint=_REDIS_HINT)
    require_redis(settings.redis_url, hint=_REDIS_HINT)
    queue = settings.queue
    for request in validated:
        sent, _ = enqueue_refresh(app, queue=queue, **request.model_dump(exclude_none=True))
        print(json.dumps({"request_id": sent.request_id, "site_code": sent.site_code, "package_id": sent.package_id}))
    return 0


def format_outcome(outcome: Outcome) -> str:
    """One human line per outcome event."""
    data = outcome.to_dict()
    error = data.get("error") or {}
    detail = ""
    if error:
        detail = f" {error.get('kind')}: {error.get('message')}"
    if data.get("status") == "retrying" and data.get("next_retry_at"):
        detail += f" (next try {data['next_retry_at']})"
    if data.get("joined_request_id"):
        detail += f" (joined {data['joined_request_id']})"
    if data.get("source_version_after") is not None:
        detail += f" SourceVersion {data.get('source_version_before')} -> {data.get('source_version_after')}"
    block = data.get("distribution")
    if block:
        counts = ", ".join(f"{n} {key}" for key, n in block["counts"].items() if n) or "targets not read yet"
        stragglers = [f"{row['dp']} {row['status']}" for row in block["dps"] if row["status"] != "done"][:3]
        detail += f" DPs: {counts}" + (f" ({'; '.join(stragglers)})" if stragglers else "")
        redistributed = [entry["dp"] for entry in block.get("redistributed", ()) if entry["error"] is None]
        if redistributed:
            detail += f" redistributed: {', '.join(redistributed[:3])}"
    name = data.get("package_name") or ""
    return (
        f"{data.get('site_code')}/{data.get('package_id')} {name[:40]!s:<40} "
        f"{data.get('status'):<26} attempt {data.get('attempt')}{detail}"
    )


def watch(*, count: int, timeout_s: float) -> int:
    """Print outcome events as they are published; stop after `count` finals or `timeout_s`."""
    settings = get_settings()
    require_redis(settings.redis_url, hint=_REDIS_HINT)
    keys = RedisKeys(settings.key_prefix)
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    finals = 0
    with subscribe(redis_from_url(settings.redis_url), keys) as live:
        # Said once the server has confirmed the subscription: from here on nothing published is missed.
        print(f"watch: listening on {keys.outcome_channel}", file=sys.stderr, flush=True)
        while deadline is None or time.monotonic() < deadline:
            try:
                outcome = live.get(timeout_s=1.0)
            except InvalidOutcomeError as exc:
                # Someone else's message on the channel, or a schema version we do not know.
                print(
                    f"watch: skipped a message that is not a v{OUTCOME_SCHEMA_VERSION} outcome ({exc})", file=sys.stderr
                )
                continue
            if outcome is None:
                continue
            print(format_outcome(outcome), flush=True)
            if outcome.final:
                finals += 1
                if count and finals >= count:
                    return 0
    print(f"watch: stopped after {timeout_s:.0f}s with {finals} final outcome(s)", file=sys.stderr)
    return 0
