"""A bulk refresh: enumerate the packages the criteria select, then feed them to the workers paced.

    runner.enumerate(bulk_id)     page through WQL Enumerate/Pull, append children to the bulk's
                                  pending list (Redis), fixed total, first window dispatched
    runner.child_ended(outcome)   count a child's final once; refill the window; publish the bulk's
                                  outcome when the last child ends
    runner.child_progress(event)  a child followed to every DP (`until`): out of the window, its
                                  DPs rolled up (worker/domain/stragglers.py)
    runner.pump(bulk_id)          the safety net, every `bulk_pump_interval_s` while the bulk lives:
                                  refill the window, re-send children whose message was lost,
                                  drain a cancelled bulk, publish the bulk's outcome if still due

Memory stays flat whatever the package count: pages stream from the provider into Redis. Children
reach the broker no faster than slots free up: at most the site's `max_concurrency` plus
`bulk_window_extra` are outstanding at once, so a single urgent request never queues behind
thousands of bulk messages (and it outranks bulk children for a provider slot).

A child is a plain `sccm.refresh_package` request: request id `<bulk id>:<PackageID>`, the bulk
id as `correlation_id`, and a `package_hint` with what the enumeration read, so its first
attempt needs one WS-Man operation (the Invoke) instead of two. Only the bulk's record makes a
request its child (`claimed_bulk` reads the id's shape, the store whether the bulk lists it): a
message that merely names the bulk as its correlation id is an ordinary request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from config.settings import Settings
from errors import RefreshError
from worker.domain.criteria import BulkCriteria, parse_criteria, queries
from worker.domain.deadline import Deadline
from worker.domain.ids import child_request_id, claimed_bulk
from worker.domain.outcomes import (
    STATUS_CANCELLED,
    STATUS_DISTRIBUTING,
    AttemptInfo,
    Outcome,
    RequestInfo,
    format_timestamp,
)
from worker.domain.packages import TASK_SEQUENCE_CLASS, PackageInfo
from worker.domain.request import UNTIL_ACCEPTED, PackageHint
from worker.domain.stragglers import straggler_marks
from worker.stores.bulk_outcomes import BulkOutcome
from worker.stores.bulk_store import UNTIL_KEY, BulkNotFoundError, BulkRecord, BulkStore, ChildSpec
from worker.wsman import WmiInstance

__all__ = ["DRY_RUN_KEY", "BulkRunner", "EnumerationResult", "child_kwargs"]

log = logging.getLogger(__name__)

SAMPLE_SIZE: Final = 20  # packages a dry run lists
# Stored with the criteria in the bulk record: a dry run counts and lists, and refreshes nothing.
DRY_RUN_KEY: Final = "dry_run"
_APPEND_PAGE: Final = 500
_PUMP_BATCH: Final = 1000


class Enumerator(Protocol):
    """What enumeration needs from the SMS Provider client (`worker.provider.client.SccmClient`)."""

    def enumerate(
        self, wql: str, *, page_size: int = ..., deadline: Deadline | None = ...
    ) -> Iterator[WmiInstance]: ...


class OutcomeSink(Protocol):
    def publish(self, outcome: Outcome, *, message_key: str | None = None) -> bool: ...

    def publish_bulk(self, outcome: BulkOutcome) -> bool: ...


Dispatch = Callable[[Sequence[Mapping[str, Any]]], None]


@dataclass(frozen=True)
class EnumerationResult:
    record: BulkRecord
    enumerated: int
    dispatched: int


def child_kwargs(
    bulk_id: str, child: ChildSpec, requested_at: str | None, *, until: str = UNTIL_ACCEPTED
) -> dict[str, Any]:
    """The `sccm.refresh_package` kwargs of one child (its spec is what enumeration stored; `until`, its bulk's)."""
    spec = child.spec
    kwargs: dict[str, Any] = {
        "request_id": child.request_id,
        "correlation_id": bulk_id,
        "site_code": spec["site_code"],
        "package_id": spec["package_id"],
        "package_class": spec["package_class"],
        "package_hint": spec.get("hint"),
    }
    if spec.get("force"):
        kwargs["force"] = True
    if requested_at is not None:
        kwargs["requested_at"] = requested_at
    if until != UNTIL_ACCEPTED:
        kwargs["until"] = until  # the default is left out: a child of an older bulk reads the same
    return kwargs


class BulkRunner:
    """Runs bulk jobs with the given collaborators (built once per worker process)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: BulkStore,
        outcomes: OutcomeSink,
        dispatch: Dispatch,
        worker: str,
    ) -> None:
        self._settings = settings
        self._store = store
        self._outcomes = outcomes
        self._dispatch = dispatch
        self._worker = worker

    # -- enumeration ---------------------------------------------------------------------

    def enumerate(
        self, bulk_id: str, client: Enumerator, *, page_size: int = 500, deadline: Deadline | None = None
    ) -> EnumerationResult:
        """Select the packages, stream them into the bulk (or count them, for a dry run), start it.

        Safe to run again after a crash: appends skip children already appended. A RefreshError
        from the provider is raised for the caller to retry or fail the bulk; past `deadline`, that
        is a `timeout`.
        """
        record = self._record(bulk_id)
        if record.state != "enumerating":
            return EnumerationResult(record, 0, 0)
        criteria = parse_criteria({k: v for k, v in record.criteria.items() if k not in (DRY_RUN_KEY, UNTIL_KEY)})
        if record.criteria.get(DRY_RUN_KEY):
            return self._dry_run(record, criteria, client, page_size, deadline)
        enumerated = dispatched = 0
        page: list[ChildSpec] = []
        for package in self._packages(criteria, client, page_size, deadline):
            enumerated += 1
            page.append(self._child(bulk_id, criteria, package))
            if len(page) >= _APPEND_PAGE:
                if not self._store.append_pending(bulk_id, page).accepting:
                    return EnumerationResult(self._record(bulk_id), enumerated, dispatched)  # cancelled meanwhile
                page = []
                # Children start while the rest is still being enumerated: slots never idle.
                dispatched += self._refill(record)
        if page and not self._store.append_pending(bulk_id, page).accepting:
            return EnumerationResult(self._record(bulk_id), enumerated, dispatched)
        update = self._store.enumeration_done(bulk_id)
        if update.last:
            self._publish_bulk(update.record)
        dispatched += self._refill(update.record)
        log.info("bulk %s: %d packages selected, %d children dispatched", bulk_id, enumerated, dispatched)
        return EnumerationResult(update.record, enumerated, dispatched)

    def fail(self, bulk_id: str, error: RefreshError) -> BulkRecord:
        """Enumeration cannot finish: the bulk fails; children already pending end `cancelled`."""
        update = self._store.fail(bulk_id, f"{error.kind}: {error.message}")
        self.pump(bulk_id)
        return update.record

    def _dry_run(
        self, record: BulkRecord, criteria: BulkCriteria, client: Enumerator, page_size: int, deadline: Deadline | None
    ) -> EnumerationResult:
        total = 0
        sample: list[dict[str, Any]] = []
        for package in self._packages(criteria, client, page_size, deadline):
            total += 1
            if len(sample) < SAMPLE_SIZE:
                sample.append(_summary(package))
        update = self._store.dry_run_done(record.bulk_id, total, sample)
        if update.last:
            self._publish_bulk(update.record)
        return EnumerationResult(update.record, total, 0)

    def _packages(
        self, criteria: BulkCriteria, client: Enumerator, page_size: int, deadline: Deadline | None
    ) -> Iterator[PackageInfo]:
        for query in queries(criteria):
            for instance in client.enumerate(query.wql, page_size=page_size, deadline=deadline):
                package = PackageInfo.from_instance(instance)
                if not criteria.excludes(package.package_id):
                    yield package

    @staticmethod
    def _child(bulk_id: str, criteria: BulkCriteria, package: PackageInfo) -> ChildSpec:
        spec: dict[str, Any] = {
            "site_code": criteria.site_code,
            "package_id": package.package_id,
            "package_class": package.class_name,
            "hint": PackageHint.of(package).model_dump(mode="json"),
        }
        if package.class_name == TASK_SEQUENCE_CLASS:
            spec["force"] = True  # the criteria named the class explicitly, with force (checked there)
        return ChildSpec(child_request_id(bulk_id, package.package_id), spec)

    # -- children ending, pacing ---------------------------------------------------------

    def child_ended(self, outcome: Outcome) -> None:
        """Count a bulk child's final outcome (once), refill the window, finish the bulk if it was the last.

        Whatever the outcome names: a request id that is not a child's, or a child the bulk does
        not list as outstanding, counts for nothing (the store decides, in the same script).
        """
        bulk_id = claimed_bulk(outcome.request_id)
        if not outcome.final or bulk_id is None:
            return
        try:
            # Counting the child and refilling the window is one call (one round trip to Redis).
            window = self._window(outcome.site_code)
            update = self._store.child_finished(
                bulk_id,
                outcome.request_id,
                outcome.status,
                refill=window,
                max_count=min(window, _PUMP_BATCH),
                marks=straggler_marks(outcome.distribution),
            )
        except BulkNotFoundError:
            return
        if update.last:
            self._publish_bulk(update.record)
        elif update.taken:
            self._send(update.record, update.taken)

    def child_progress(self, outcome: Outcome) -> None:
        """A child followed to every DP reports (`distributing`): it leaves the window, its DPs are rolled up.

        Following lasts as long as the DPs take (up to `FOLLOW__DEADLINE_S`): a child kept in the
        window that long would pace the bulk by DP copies instead of provider calls. Its place is
        refilled in the same call; its message stays watched by the lost-message sweep
        (worker/stores/request_watch.py) like any re-queued request.
        """
        bulk_id = claimed_bulk(outcome.request_id)
        if outcome.status != STATUS_DISTRIBUTING or bulk_id is None:
            return
        try:
            window = self._window(outcome.site_code)
            update = self._store.child_following(
                bulk_id,
                outcome.request_id,
                straggler_marks(outcome.distribution),
                refill=window,
                max_count=min(window, _PUMP_BATCH),
            )
        except BulkNotFoundError:
            return
        if update.taken:
            self._send(update.record, update.taken)

    def pump(self, bulk_id: str) -> bool:
        """One round of the safety net; False once the bulk is over (or gone): stop pumping."""
        try:
            record = self._record(bulk_id)
        except BulkNotFoundError:
            return False
        if record.state in ("cancelled", "failed"):
            self._drain(record)
            record = self._record(bulk_id)
        if record.finished_at is not None:
            self._publish_bulk(record)
            return False
        if record.state == "running":
            self._refill(record)
            self._resend_stalled(record)
        return True

    def _refill(self, record: BulkRecord) -> int:
        if record.state not in ("enumerating", "running"):
            return 0
        window = self._window(record.site_code)
        children = self._store.take(record.bulk_id, window, max_count=min(window, _PUMP_BATCH))
        self._send(record, children)
        return len(children)

    def _resend_stalled(self, record: BulkRecord) -> None:
        limits = self._settings.limits
        idle_s = float(limits.visibility_timeout_s + 2 * limits.max_countdown_s)
        stalled = self._store.stalled_children(record.bulk_id, idle_s=idle_s, undelivered_s=limits.bulk_undelivered_s)
        if stalled:
            log.warning(
                "bulk %s: %d children silent (or never delivered for %.0f s): sent again",
                record.bulk_id,
                len(stalled),
                limits.bulk_undelivered_s,
            )
            self._send(record, stalled)

    def _send(self, record: BulkRecord, children: Sequence[ChildSpec]) -> None:
        if not children:
            return
        requested_at = format_timestamp(record.started_at) if record.started_at is not None else None
        until = record.until
        self._dispatch([child_kwargs(record.bulk_id, child, requested_at, until=until) for child in children])

    def _drain(self, record: BulkRecord) -> None:
        """Children a cancelled (or failed) bulk never sent end `cancelled`, each counted."""
        for batch in self._store.iter_drain_cancelled(record.bulk_id):
            for child in batch:
                outcome = self._cancelled(record, child)
                self._outcomes.publish(outcome)
                update = self._store.child_finished(record.bulk_id, child.request_id, STATUS_CANCELLED)
                if update.last:
                    self._publish_bulk(update.record)

    def _cancelled(self, record: BulkRecord, child: ChildSpec) -> Outcome:
        spec = child.spec
        now = _now()
        info = RequestInfo(
            request_id=child.request_id,
            site_code=spec["site_code"],
            package_class=spec["package_class"],
            package_id=spec["package_id"],
            requested_at=record.started_at or now,
            correlation_id=record.bulk_id,
            package_name=(spec.get("hint") or {}).get("name"),
        )
        return Outcome.cancelled(info, AttemptInfo(1, 1, now, now, self._worker, 0.0))

    def _publish_bulk(self, record: BulkRecord) -> None:
        if self._outcomes.publish_bulk(BulkOutcome.of(record)):
            log.info("bulk %s ended %s: %s", record.bulk_id, record.state, record.counts)

    def _record(self, bulk_id: str) -> BulkRecord:
        record = self._store.get(bulk_id)
        if record is None:
            raise BulkNotFoundError(f"no bulk job {bulk_id!r}")
        return record

    def _window(self, site_code: str) -> int:
        """At most this many children of a bulk at this site are outstanding at once."""
        return self._max_concurrency(site_code) + self._settings.limits.bulk_window_extra

    def _max_concurrency(self, site_code: str) -> int:
        try:
            return self._settings.provider(site_code).max_concurrency
        except RefreshError:
            return 1


def _summary(package: PackageInfo) -> dict[str, Any]:
    return {
        "package_id": package.package_id,
        "package_class": package.class_name,
        "name": package.name,
        "pkg_source_flag": package.pkg_source_flag,
        "source_version": package.source_version,
    }


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415 - kept local: the only wall-clock read here

    return datetime.now(UTC)
