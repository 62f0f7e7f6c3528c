"""Task `sccm.refresh_package`: validate, attempt, decide, publish. Nothing else lives here.

Contract (JSON kwargs only): site_code, package_id, package_class="SMS_DriverPackage",
request_id=None (defaults to the task id), correlation_id=None, force=False, verify=False.
The worker adds `retry_state` when it re-queues a request; producers never send it.

Every attempt publishes an outcome event (status "retrying" while waiting), and exactly one
final outcome is published per request id, whatever redeliveries happen.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from config.settings import get_settings
from worker.app import REFRESH_TASK, app
from worker.decide import decide_after_error, wake_early
from worker.errors import ConfigError, InvalidRequestError, OperationTimeoutError, RefreshError
from worker.outcomes import Outcome
from worker.refresh import attempt_refresh
from worker.request import RETRY_STATE_KWARG, RefreshRequest, RetryState, parse_request
from worker.runtime import client_for, publisher, worker_identity

__all__ = ["refresh_package"]

log = logging.getLogger(__name__)

# The kwargs that identify a request well enough to publish a "rejected" outcome for it.
_IDENTITY = ("site_code", "package_id", "package_class", "request_id", "correlation_id")


@app.task(bind=True, name=REFRESH_TASK, max_retries=None, acks_late=True, reject_on_worker_lost=True)
def refresh_package(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    started_at = time.time()
    raw_state = kwargs.pop(RETRY_STATE_KWARG, None)
    task_id = str(self.request.id or "")
    try:
        if args:
            raise InvalidRequestError("positional arguments are not accepted: send kwargs")
        request = parse_request(kwargs)
        if request.is_task_sequence and not request.force:
            raise InvalidRequestError(
                "refusing RefreshPkgSource on SMS_TaskSequencePackage: Microsoft warns it renders the task "
                "sequence inoperable; send force=true to override"
            )
        settings = get_settings()
        settings.provider(request.site_code)  # unknown site -> ConfigError, before any attempt
    except (InvalidRequestError, ConfigError) as exc:
        return _publish(Outcome.rejected(**_rejected_identity(kwargs, task_id), error=exc.as_dict(),
                                         task_id=task_id, started_at=started_at, worker=worker_identity()))

    request_id = request.request_id or task_id
    state = RetryState.from_kwargs(raw_state, now=started_at)
    if state.requested_at is None:
        state = state.evolve(requested_at=started_at, first_attempt_at=started_at)
    limits = settings.limits

    early = wake_early(state, now=started_at, max_countdown_s=limits.max_countdown_s)
    if early is not None:
        # Woken before the policy's wait is over: re-queue without touching the provider.
        raise self.retry(kwargs=_retry_kwargs(request, state), countdown=early, max_retries=None)

    state = state.evolve(attempts=state.attempts + 1, not_before=None)
    common = {
        "request": request,
        "request_id": request_id,
        "task_id": task_id,
        "state": state,
        "started_at": started_at,
    }
    seen: dict[str, Any] = {}
    try:
        result = attempt_refresh(
            client_for(request.site_code),
            request.package_class,
            request.package_id,
            verify_timeout_s=limits.verify_timeout_s if request.verify else 0.0,
            verify_poll_s=limits.verify_poll_s,
            known_version_before=state.source_version_before,
            on_package=lambda pkg: seen.update(name=pkg.name, version=pkg.source_version),
        )
    except SoftTimeLimitExceeded:
        error: RefreshError = OperationTimeoutError("task soft time limit reached during the WS-Man exchange")
    except RefreshError as exc:
        error = exc
    except Retry:
        raise
    except Exception as exc:
        # A bug, not an SCCM condition: report it as failed (nothing lost), then let Celery
        # record the failure too. Only the type name: str(exc) of a library error may hold URLs.
        log.exception("internal error refreshing %s", request.package_id)
        _publish(Outcome.final_failure(status="failed", error={"kind": "internal", "message": type(exc).__name__},
                                       **_fields(common, seen)))
        raise
    else:
        return _publish(Outcome.success(status=result.status, return_value=result.return_value,
                                        source_version_before=result.source_version_before,
                                        source_version_after=result.source_version_after,
                                        **_fields(common, seen, package_name=result.package.name)))

    # The attempt failed: remember what we learned, then decide.
    state = state.evolve(
        package_name=seen.get("name", state.package_name),
        source_version_before=state.source_version_before if state.source_version_before is not None
        else seen.get("version"),
    )
    common["state"] = state
    now = time.time()
    decision = decide_after_error(error, state, settings.retry, now=now, max_countdown_s=limits.max_countdown_s)
    if decision.verdict == "retry":
        assert decision.retry_at is not None
        _publish(Outcome.retrying(error=error.as_dict(), next_retry_at=decision.retry_at, **_fields(common, seen)))
        log.info("refresh %s of %s/%s: %s, retry in %.1fs", request_id, request.site_code, request.package_id,
                 error.kind, decision.wait_s)
        raise self.retry(kwargs=_retry_kwargs(request, decision.state), countdown=decision.countdown_s,
                         max_retries=None)
    status = "gave_up_medium_not_ready" if decision.verdict == "give_up_medium" else "failed"
    return _publish(Outcome.final_failure(status=status, error=error.as_dict(), return_value=error.code
                                          if error.kind in ("medium_not_ready", "return_value") else None,
                                          **_fields(common, seen)))


def _fields(common: dict[str, Any], seen: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    request: RefreshRequest = common["request"]
    state: RetryState = common["state"]
    fields: dict[str, Any] = {
        "request_id": common["request_id"],
        "correlation_id": request.correlation_id,
        "task_id": common["task_id"],
        "site_code": request.site_code,
        "package_class": request.package_class,
        "package_id": request.package_id,
        "package_name": seen.get("name", state.package_name),
        "attempt": state.attempts,
        "requested_at": state.requested_at,
        "started_at": common["started_at"],
        "worker": worker_identity(),
    }
    if "source_version_before" not in overrides:
        fields["source_version_before"] = (
            state.source_version_before if state.source_version_before is not None else seen.get("version")
        )
    fields.update(overrides)
    return fields


def _retry_kwargs(request: RefreshRequest, state: RetryState) -> dict[str, Any]:
    return {**request.model_dump(), RETRY_STATE_KWARG: state.to_kwargs()}


def _rejected_identity(kwargs: dict[str, Any], task_id: str) -> dict[str, Any]:
    """What can be said of a rejected request without trusting it: short strings only."""
    identity: dict[str, Any] = {}
    for name in _IDENTITY:
        value = kwargs.get(name)
        identity[name] = value[:64] if isinstance(value, str) else None
    identity["request_id"] = identity["request_id"] or task_id
    return identity


def _publish(outcome: Outcome) -> dict[str, Any]:
    publisher().publish(outcome)
    return outcome.to_dict()
