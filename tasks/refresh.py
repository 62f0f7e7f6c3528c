"""Task `sccm.refresh_package`: validate, attempt, decide, publish. Nothing else lives here.

Contract (JSON kwargs only): site_code, package_id, package_class="SMS_DriverPackage",
request_id=None (defaults to the task id), correlation_id=None, force=False, verify=False,
requested_at=None. The worker adds `retry_state` when it re-queues a request; a producer that
sends one gets it validated and, if implausible, ignored.

Every attempt publishes an outcome event (status "retrying" while waiting), and exactly one
final outcome is published per request id, whatever redeliveries happen. No path acks a
request without its final outcome recorded: anything unexpected becomes an `internal` final
outcome, and a final outcome that cannot be written re-queues the request.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from redis.exceptions import RedisError

from config.settings import Settings, get_settings
from worker.app import REFRESH_TASK, app
from worker.decide import decide_after_error, wake_early
from worker.errors import ConfigError, InternalError, InvalidRequestError, OperationTimeoutError, RefreshError
from worker.outcomes import AttemptInfo, Outcome, RequestInfo
from worker.packages import PackageInfo
from worker.publish import worker_identity
from worker.refresh import attempt_refresh
from worker.request import RETRY_STATE_KWARG, RefreshRequest, RetryState, parse_request
from worker.runtime import client_for, publisher

__all__ = ["refresh_package"]

log = logging.getLogger(__name__)

_UNKNOWN = "unknown"
# When a final outcome cannot be written (outcome Redis down past the publisher's deadline, or
# the soft time limit hit while publishing), try the request again after this.
PUBLISH_REQUEUE_S = 30
_CELERY_CONTROL_FLOW = (Retry, Reject, Ignore)


class _FinalNotPublishedError(Exception):
    """The outcome Redis is unreachable (past the publisher's deadline): no final can be recorded."""


# Celery ships no type information for its decorators.
@app.task(  # type: ignore[untyped-decorator]
    bind=True, name=REFRESH_TASK, max_retries=None, acks_late=True, reject_on_worker_lost=True
)
def refresh_package(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    original = dict(kwargs)
    try:
        return _run(self, args, kwargs)
    except _CELERY_CONTROL_FLOW:
        raise
    except (_FinalNotPublishedError, SoftTimeLimitExceeded) as exc:
        # Acking now would lose the request's only record: re-queue it from the state it arrived
        # with (the refresh is harmless to repeat; the final marker keeps the outcome single).
        countdown_s = _publish_requeue_s()
        log.warning("final outcome not published (%s): request re-queued in %ss", _cause(exc), countdown_s)
        _requeue(self, args=args, kwargs=original, countdown_s=countdown_s)
    except Exception as exc:
        # A bug, not an SCCM condition. Only the type and the code path are logged or stored:
        # an exception's text can hold what it failed on (a password that would not encode).
        log.error(
            "internal error (%s) in %s; traceback without messages:\n%s",
            type(exc).__name__,
            REFRESH_TASK,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        error = InternalError(f"internal error: {type(exc).__name__}")
        try:
            _publish(Outcome.final_failure(_untrusted_request(original, self), _Clock.start().run(1, 1), error))
        except _FinalNotPublishedError:
            _requeue(self, args=args, kwargs=original, countdown_s=_publish_requeue_s())
        raise error from None


def _run(self: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    started = _Clock.start()
    raw_state = kwargs.pop(RETRY_STATE_KWARG, None)
    task_id = str(self.request.id or "")
    try:
        request, settings = _validate(args, kwargs)
    except (InvalidRequestError, ConfigError) as exc:
        return _publish(Outcome.rejected(_untrusted_request(kwargs, self), started.run(1, 1), exc))

    request_id = request.request_id or task_id
    try:
        already_final = publisher().final_recorded(request_id)
    except RedisError as exc:
        # The outcome store is down: an attempt now could not record its outcome anyway.
        raise _FinalNotPublishedError from exc
    if already_final:
        # A redelivery (or a duplicate re-queue) of a request that already ended: nothing to do.
        log.info("request %s already has its final outcome; redelivery dropped", request_id)
        return {"request_id": request_id, "already_final": True}

    limits = settings.limits
    state = RetryState.from_kwargs(raw_state, now=started.epoch, max_wait_s=_longest_wait_s(settings))
    if state.requested_at is None:
        asked = request.requested_at.timestamp() if request.requested_at is not None else started.epoch
        # A producer clock ahead of ours must not put requested_at after the attempt started.
        state = state.evolve(requested_at=min(asked, started.epoch), first_attempt_at=started.epoch)
    early = wake_early(state, now=started.epoch, max_countdown_s=limits.max_countdown_s)
    if early is not None:
        # Woken before the policy's wait is over: re-queue without touching the provider.
        _requeue(self, kwargs=_retry_kwargs(request, state), countdown_s=early)

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
    decision = decide_after_error(error, state, settings.retry, now=time.time(), max_countdown_s=limits.max_countdown_s)
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
        _requeue(self, kwargs=_retry_kwargs(request, decision.state), countdown_s=decision.countdown_s)
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


def _requeue(task: Task, *, kwargs: dict[str, Any], countdown_s: float, args: tuple[Any, ...] = ()) -> NoReturn:
    """Task.retry, except that a failed re-queue puts the message back instead of dropping it.

    Celery turns a failed publish of the retry into Reject(requeue=False), which on Redis deletes
    the message: the request would vanish. Requeue=True restores it to the queue instead.
    """
    try:
        task.retry(args=args or None, kwargs=kwargs, countdown=max(0.0, countdown_s), max_retries=None)
    except Reject as exc:
        log.warning("re-queue of %s failed (%s); message returned to the queue", task.request.id, exc.reason)
        raise Reject("re-queue failed", requeue=True) from None
    raise AssertionError("Task.retry returned")  # pragma: no cover - it always raises


def _cause(exc: BaseException) -> str:
    if isinstance(exc, SoftTimeLimitExceeded):
        return "soft time limit"
    return f"outcome Redis unavailable: {type(exc.__cause__).__name__}"


def _publish_requeue_s() -> float:
    return float(min(PUBLISH_REQUEUE_S, get_settings().limits.max_countdown_s))


def _longest_wait_s(settings: Settings) -> float:
    policies = (settings.retry.in_call, settings.retry.transient, settings.retry.medium)
    return max(p.max_backoff_s for p in policies)


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
        started_at = datetime.fromtimestamp(self.epoch, UTC)
        return AttemptInfo(
            attempt=attempt,
            attempts=attempts,
            started_at=started_at,
            # The wall clock may step back during an attempt; an outcome never ends before it starts.
            finished_at=max(started_at, datetime.now(UTC)),
            worker=worker_identity(),
            duration_ms=(time.monotonic() - self.monotonic) * 1000.0,
        )


def _request_info(request: RefreshRequest, task_id: str, state: RetryState, seen: _Seen) -> RequestInfo:
    asked = state.requested_at if state.requested_at is not None else state.first_attempt_at
    return RequestInfo(
        request_id=request.request_id or task_id,
        site_code=request.site_code,
        package_class=request.package_class,
        package_id=request.package_id,
        requested_at=datetime.fromtimestamp(asked if asked is not None else time.time(), UTC),
        correlation_id=request.correlation_id,
        task_id=task_id or None,
        package_name=seen.name,
    )


def _untrusted_request(kwargs: dict[str, Any], task: Task) -> RequestInfo:
    """What can be said of a request we refuse or failed on, without trusting it: short strings only."""
    task_id = str(task.request.id or "")

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
        requested_at=datetime.now(UTC),
        correlation_id=text("correlation_id"),
        task_id=task_id or None,
    )


def _retry_kwargs(request: RefreshRequest, state: RetryState) -> dict[str, Any]:
    return {**request.model_dump(mode="json"), RETRY_STATE_KWARG: state.to_kwargs()}


def _publish(outcome: Outcome) -> dict[str, Any]:
    try:
        publisher().publish(outcome)
    except RedisError as exc:
        if outcome.final:
            raise _FinalNotPublishedError from exc
        # A lost "retrying" event is only a gap in the live view; the final outcome is what counts.
        log.warning("retrying event for %s not published: %s", outcome.request_id, type(exc).__name__)
    return outcome.to_dict()
