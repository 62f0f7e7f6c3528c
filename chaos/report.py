"""The accounting of one scenario and how its row is printed (pure: no I/O).

Every message sent has a task id. Its final outcome is the one `final: true` outcome in the
durable stream whose `task_id` equals it (re-queues keep the task id):

* exactly-one-final: task ids with exactly one final outcome;
* lost: task ids with none when the drain ended;
* duplicate finals: finals beyond the first, per task id;
* extra provider refreshes: accepted RefreshPkgSource calls in the provider's call log, per
  package, beyond the number of valid requests for that package whose final is accepted or
  source_updated (each such request's refresh must land exactly once; a refresh that did not
  land at all fails the scenario's "refresh landed" check instead);
* drain time: first send to the last final (stream ids carry the Redis server's clock);
* worst lateness: the last final minus the end of the scenario's last fault, or minus its last
  send when that came later (a scenario without a fault: the last send); 0 when every final came
  before. Over LATENESS_BOUND_S, the row fails: a request must be final within a minute of the
  end of whatever broke.

A scenario keeps its promise when lost, duplicate finals and extra refreshes are 0, the worst
lateness is within the bound and each of its own checks holds. Columns a scenario cannot measure
are None ("n/a" in the table).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "COLUMNS",
    "LATENESS_BOUND_S",
    "SUCCESS_STATUSES",
    "Check",
    "FinalRecord",
    "Row",
    "Sent",
    "format_header",
    "format_row",
    "row_json",
    "tally",
]

SUCCESS_STATUSES: Final = frozenset({"accepted", "source_updated"})
COLUMNS: Final = (
    ("scenario", 22),
    ("requests", 9),
    ("exactly-one-final", 18),
    ("lost", 6),
    ("duplicate finals", 17),
    ("extra provider refreshes", 25),
    ("drain time (s)", 15),
    ("worst lateness (s)", 19),
    ("result", 7),
)
# Every request final within this long of the end of the last fault (or the last send).
LATENESS_BOUND_S: Final = 60.0
_SAMPLE: Final = 5


@dataclass(frozen=True)
class Sent:
    """One message put on the queue, and what it should cause."""

    task_id: str
    label: str  # which generator made it: lost messages are reported by label
    valid: bool = False  # the contract accepts it: if it ends accepted, its refresh must land once
    package_id: str | None = None  # the package a valid request refreshes
    # When it entered the pipeline, if after the scenario's own sends (a bulk's child, dispatched by
    # the bulk's window): its lateness counts from then when that is later than the fault's end.
    sent_epoch_s: float | None = None


@dataclass(frozen=True)
class FinalRecord:
    """A final outcome as read from the stream (only what the accounting needs)."""

    task_id: str | None
    status: str
    at_ms: int  # the stream entry id's milliseconds (Redis server clock)
    request_id: str | None = None  # what a bulk's children are known by (their task ids are the worker's)


@dataclass(frozen=True)
class Check:
    """A scenario's own promise beyond the common columns."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Row:
    scenario: str
    requests: int
    exactly_one_final: int
    lost: int
    duplicate_finals: int | None
    extra_refreshes: int | None
    drain_s: float
    lateness_s: float | None = None  # None: the scenario has no such measure (n/a)
    checks: tuple[Check, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    lateness_bound_s: float = LATENESS_BOUND_S

    @property
    def late(self) -> bool:
        return self.lateness_s is not None and self.lateness_s > self.lateness_bound_s

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and not self.duplicate_finals
            and not self.extra_refreshes
            and not self.late
            and all(check.ok for check in self.checks)
        )

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def tally(
    scenario: str,
    sent: Sequence[Sent],
    finals: Iterable[FinalRecord],
    accepted_refreshes: Mapping[str, int],
    *,
    first_send_epoch_s: float,
    lateness_from_epoch_s: float | None = None,
    checks: Sequence[Check] = (),
    details: Mapping[str, Any] | None = None,
) -> Row:
    """The row of a pipeline scenario; `accepted_refreshes` is the call log's count per PackageID.

    `lateness_from_epoch_s`: when the last fault ended (or the last send, if later); None leaves the
    worst lateness unmeasured.
    """
    by_task: dict[str, list[FinalRecord]] = {}
    unknown = 0
    last_ms = 0
    for record in finals:
        last_ms = max(last_ms, record.at_ms)
        if record.task_id is None:
            unknown += 1
        else:
            by_task.setdefault(record.task_id, []).append(record)
    sent_ids = {message.task_id for message in sent}
    unknown += sum(len(records) for task_id, records in by_task.items() if task_id not in sent_ids)
    lost = [message for message in sent if not by_task.get(message.task_id)]
    counts = [len(by_task.get(message.task_id, ())) for message in sent]

    expected: Counter[str] = Counter()
    for message in sent:
        records = by_task.get(message.task_id, [])
        if message.valid and message.package_id and records and records[0].status in SUCCESS_STATUSES:
            expected[message.package_id.upper()] += 1
    actual = Counter({package.upper(): count for package, count in accepted_refreshes.items() if count})
    extra = {package: actual[package] - expected[package] for package in actual if actual[package] > expected[package]}
    missing = {
        package: expected[package] - actual[package] for package in expected if expected[package] > actual[package]
    }

    statuses = Counter(records[0].status for records in by_task.values() if records)
    landed = Check(
        "each accepted request's refresh landed",
        not missing,
        f"{sum(missing.values())} missing, e.g. {sorted(missing)[:_SAMPLE]}" if missing else "",
    )
    all_details: dict[str, Any] = {
        "final_statuses": dict(sorted(statuses.items())),
        "lost_by_label": dict(Counter(message.label for message in lost).most_common()),
        "lost_sample": [message.task_id for message in lost[:_SAMPLE]],
        "duplicate_sample": [tid for tid, records in by_task.items() if len(records) > 1][:_SAMPLE],
        "extra_refreshes_by_package": dict(sorted(extra.items())[: _SAMPLE * 2]),
        "finals_for_unknown_task_ids": unknown,
        **(details or {}),
    }
    return Row(
        scenario=scenario,
        requests=len(sent),
        exactly_one_final=sum(1 for count in counts if count == 1),
        lost=len(lost),
        duplicate_finals=sum(max(0, count - 1) for count in counts),
        extra_refreshes=sum(extra.values()),
        drain_s=max(0.0, last_ms / 1000.0 - first_send_epoch_s) if last_ms else 0.0,
        lateness_s=None if lateness_from_epoch_s is None else _worst_lateness(sent, by_task, lateness_from_epoch_s),
        checks=(*checks, landed),
        details=all_details,
    )


def _worst_lateness(
    sent: Sequence[Sent], by_task: Mapping[str, list[FinalRecord]], from_epoch_s: float
) -> float | None:
    """The latest final (duplicates too) after the later of `from_epoch_s` and its message's own entry."""
    worst: float | None = None
    for message in sent:
        records = by_task.get(message.task_id)
        if not records:
            continue
        since = max(from_epoch_s, message.sent_epoch_s or from_epoch_s)
        late = max(0.0, max(record.at_ms for record in records) / 1000.0 - since)
        worst = late if worst is None else max(worst, late)
    return worst


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_header() -> str:
    names = [name.ljust(width) if index == 0 else name.rjust(width) for index, (name, width) in enumerate(COLUMNS)]
    return " | ".join(names)


def format_row(row: Row) -> str:
    """One table line, then one indented line per failed check."""
    values: list[object] = [
        row.scenario,
        row.requests,
        row.exactly_one_final,
        row.lost,
        row.duplicate_finals,
        row.extra_refreshes,
        row.drain_s,
        row.lateness_s,
        "ok" if row.ok else "FAIL",
    ]
    cells = [
        _cell(value).ljust(width) if index == 0 else _cell(value).rjust(width)
        for index, (value, (_name, width)) in enumerate(zip(values, COLUMNS, strict=True))
    ]
    lines = [" | ".join(cells)]
    if row.late:
        lines.append(
            f"    too late: the last final came {row.lateness_s:.1f} s after the fault ended, "
            f"over the {row.lateness_bound_s:.0f} s bound"
        )
    lines += [f"    check failed: {check.name}: {check.detail}" for check in row.failed_checks]
    if row.lost and row.details.get("lost_by_label"):
        lines.append(f"    lost by kind: {row.details['lost_by_label']}")
    return "\n".join(lines)


def row_json(row: Row) -> str:
    """The row as one JSON line (every column, the checks and the diagnostics)."""
    return json.dumps(
        {
            "scenario": row.scenario,
            "requests": row.requests,
            "exactly_one_final": row.exactly_one_final,
            "lost": row.lost,
            "duplicate_finals": row.duplicate_finals,
            "extra_provider_refreshes": row.extra_refreshes,
            "drain_time_s": round(row.drain_s, 3),
            "worst_lateness_s": None if row.lateness_s is None else round(row.lateness_s, 3),
            "ok": row.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in row.checks],
            "details": row.details,
        },
        sort_keys=False,
        default=str,
    )
