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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import RedisError

from config.settings import Settings, get_settings
from worker.app import REFRESH_TASK, app
from worker.decide import decide_after_error, wake_early
from worker.errors import ConfigError, InternalError, InvalidRequestError, OperationTimeoutError, RefreshError
from worker.outcomes import AttemptInfo, Outcome, RequestInfo
from worker.publish import worker_identity
from worker.refresh import attempt_refresh
from worker.request import RETRY_STATE_KWARG, RefreshRequest, RetryState, parse_request
from worker.runtime import client_for, publisher
from worker.wsman import PackageInfo

__all__ = ["refresh_package"]

log = logging.getLogger(__name__)

_UNKNOWN = "unknown"
# When the outcome Redis is down past the publisher's deadline, try the request again after this.
PUBLISH_REQUEUE_S = 30


# Celery ships no type information for its decorators.
@app.task(  # type: ignore[untyped-decorator]
    bind=True, name=REFRESH_TASK, max_retries=None, acks_late=True, reject_on_worker_lost=True
)
def refresh_package(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    original = dict(kwargs)
    try:
        return _run(self, args, kwargs)
    except _FinalNotPublishedError:
        # The outcome Redis stayed unreachable past the publisher's deadline. Acking now would
        # lose the request's only record: re-queue it (the refresh is harmless to repeat, and
        # the final marker keeps the outcome single), from the state it arrived with.
        countdown_s = min(PUBLISH_REQUEUE_S, get_settings().limits.max_countdown_s)
        log.warning("final outcome not published (Redis unreachable); request re-queued in %ss", countdown_s)
        raise self.retry(args=args, kwargs=original, countdown=countdown_s, max_retries=None) from None


def _run(self: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    started = _Clock.start()
    raw_state = kwargs.pop(RETRY_STATE_KWARG, None)
    task_id = str(self.request.id or "")
    try:
        request, settings = _validate(args, kwargs)
    except (InvalidRequestError, ConfigError) as exc:
        return _publish(Outcome.rejected(_rejected_request(kwargs, task_id, started), started.run(1, 1), exc))

    state = RetryState.from_kwargs(raw_state, now=started.epoch)
    if state.requested_at is None:
        asked = request.requested_at.timestamp() if request.requested_at is not None else started.epoch
        # A producer clock ahead of ours must not put requested_at after the attempt started.
        state = state.evolve(requested_at=min(asked, started.epoch), first_attempt_at=started.epoch)
    limits = settings.limits
    early = wake_early(state, now=started.epoch, max_countdown_s=limits.max_countdown_s)
    if early is not None:
        # Woken before the policy's wait is over: re-queue without touching the provider.
        raise self.retry(kwargs=_retry_kwargs(request, state), countdown=early, max_retries=None)

    state = state.evolve(attempts=state.attempts + 1, not_before=None)
    seen = _Seen(name=state.package_name, version_before=state.source_version_before)
    try:
        result = attempt_refresh(
            client_for(request.site_code),
            request.package_class,
            request.package_id,
            verify_timeout_s=limits.verify_timeout_s if request.verify else 0.0,
            verify_poll_s=limits.verify_poll_s,
            known_version_before=state.source_version_before,
            on_package=seen.record,
        )
    except SoftTimeLimitExceeded:
        error: RefreshError = OperationTimeoutError("task soft time limit reached during the WS-Man exchange")
    except RefreshError as exc:
        error = exc
    except Exception as exc:
        # Only the type name: str() of a library error may carry URLs.
        log.exception("internal error refreshing %s/%s", request.site_code, request.package_id)
        info = _request_info(request, task_id, state, seen)
        _publish(
            Outcome.final_failure(
                info,
                started.run(state.attempts, state.attempts),
                InternalError(f"internal error: {type(exc).__name__}"),
            )
        )
        raise
    else:
        seen.name = result.package.name
        return _publish(
            Outcome.succeeded(
                _request_info(request, task_id, state, seen),
                started.run(state.attempts, state.attempts),
                source_version_before=result.source_version_before,
                source_version_after=result.source_version_after,
            )
        )

    # The attempt failed: keep what we learned about the package, then decide.
    state = state.evolve(package_name=seen.name, source_version_before=seen.version_before)
    info = _request_info(request, task_id, state, seen)
    run = started.run(state.attempts, state.attempts)
    now = time.time()
    decision = decide_after_error(error, state, settings.retry, now=now, max_countdown_s=limits.max_countdown_s)
    # A ReturnValue exists only when RefreshPkgSource answered (no fault): then `code` holds it.
    answered = error.kind in ("medium_not_ready", "return_value") and error.wsman_code is None
    return_value = error.code if answered else None
    if decision.verdict == "retry":
        assert decision.retry_at is not None
        _publish(
            Outcome.retrying(
                info,
                run,
                error,
                next_retry_at=datetime.fromtimestamp(decision.retry_at, UTC),
                return_value=return_value,
                source_version_before=seen.version_before,
            )
        )
        log.info(
            "refresh %s of %s/%s: %s, next attempt in %.1fs",
            info.request_id,
            request.site_code,
            request.package_id,
            error.kind,
            decision.wait_s,
        )
        raise self.retry(
            kwargs=_retry_kwargs(request, decision.state), countdown=decision.countdown_s, max_retries=None
        )
    return _publish(
        Outcome.final_failure(info, run, error, return_value=return_value, source_version_before=seen.version_before)
    )


def _validate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[RefreshRequest, Settings]:
    if args:
        raise InvalidRequestError("positional arguments are not accepted: send kwargs")
    request = parse_request(kwargs)
    if request.is_task_sequence and not request.force:
        raise InvalidRequestError(
            "refusing RefreshPkgSource on SMS_TaskSequencePackage: Microsoft warns it renders the task "
            "sequence inoperable; send force=true to override"
        )
    settings = get_settings()
    settings.provider(request.site_code)  # unknown site -> ConfigError before any attempt
    return request, settings


@dataclass
class _Seen:
    """What the attempt learned about the package before it failed (for outcomes and retries)."""

    name: str | None = None
    version_before: int | None = None

    def record(self, package: PackageInfo) -> None:
        self.name = package.name
        if self.version_before is None:
            self.version_before = package.source_version


@dataclass(frozen=True)
class _Clock:
    epoch: float
    monotonic: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls) -> _Clock:
        return cls(epoch=time.time())

    def run(self, attempt: int, attempts: int) -> AttemptInfo:
        return AttemptInfo(
            attempt=attempt,
            attempts=attempts,
            started_at=datetime.fromtimestamp(self.epoch, UTC),
            finished_at=datetime.now(UTC),
            worker=worker_identity(),
            duration_ms=(time.monotonic() - self.monotonic) * 1000.0,
        )


def _request_info(request: RefreshRequest, task_id: str, state: RetryState, seen: _Seen) -> RequestInfo:
    return RequestInfo(
        request_id=request.request_id or task_id,
        site_code=request.site_code,
        package_class=request.package_class,
        package_id=request.package_id,
        requested_at=datetime.fromtimestamp(state.requested_at or state.first_attempt_at or time.time(), UTC),
        correlation_id=request.correlation_id,
        task_id=task_id or None,
        package_name=seen.name,
    )


def _rejected_request(kwargs: dict[str, Any], task_id: str, started: _Clock) -> RequestInfo:
    """What can be said of a request we refuse, without trusting it: short strings only."""

    def text(name: str) -> str | None:
        value = kwargs.get(name)
        return value[:64] if isinstance(value, str) and value.strip() else None

    request_id = text("request_id")
    if request_id is None or any(c.isspace() for c in request_id):
        request_id = task_id or f"rejected-{time.time_ns()}"
    return RequestInfo(
        request_id=request_id,
        site_code=text("site_code") or _UNKNOWN,
        package_class=text("package_class") or _UNKNOWN,
        package_id=text("package_id") or _UNKNOWN,
        requested_at=datetime.fromtimestamp(started.epoch, UTC),
        correlation_id=text("correlation_id"),
        task_id=task_id or None,
    )


def _retry_kwargs(request: RefreshRequest, state: RetryState) -> dict[str, Any]:
    return {**request.model_dump(mode="json"), RETRY_STATE_KWARG: state.to_kwargs()}


class _FinalNotPublishedError(Exception):
    """A final outcome could not be written to Redis within the publisher's deadline."""


def _publish(outcome: Outcome) -> dict[str, Any]:
    try:
        publisher().publish(outcome)
    except RedisError as exc:
        if outcome.final:
            raise _FinalNotPublishedError from exc
        # A lost "retrying" event is only a gap in the live view; the final outcome is what counts.
        log.warning("retrying event for %s not published: %s", outcome.request_id, type(exc).__name__)
    return outcome.to_dict()
