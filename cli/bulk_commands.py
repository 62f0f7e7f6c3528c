"""`sccm-refresh bulk`, `status` and `cancel`: start a bulk refresh, follow it, stop it.

    sccm-refresh bulk PS1 --class SMS_DriverPackage --name "Dell *" --wait
    sccm-refresh bulk PS1 --dry-run              # the classes, how many packages, the first ones
    sccm-refresh status bulk-<32 hex>            # state, total, counts by status
    sccm-refresh status bulk-<32 hex> --dps      # until distributed: the DPs holding it back
    sccm-refresh cancel bulk-<32 hex>            # children not yet attempted end `cancelled`

Criteria are structured (never raw WQL) and validated before anything is recorded: a bad field
is one line on stderr and exit 2. `--wait` shows a live progress bar and ends with a table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from config.settings import Settings, get_settings
from embedded.redis_server import require_redis
from errors import InvalidRequestError
from producers.bulk import cancel_bulk, enqueue_bulk, get_bulk, get_stragglers
from worker.app import app
from worker.domain.criteria import parse_criteria
from worker.domain.stragglers import STRAGGLER_STATUSES
from worker.stores.bulk_store import MAX_STRAGGLER_DPS, BulkRecord

__all__ = ["bulk", "cancel", "render_record", "render_stragglers", "status", "stragglers"]

EXIT_NOT_FOUND = 1
EXIT_NOT_DONE = 1
_REDIS_HINT = "is it running? (set SCCM_REFRESH_BROKER_URL and SCCM_REFRESH_REDIS_URL)"
_POLL_S = 0.5
# Statuses in the order a summary lists them.
_STATUS_ORDER = (
    "accepted",
    "source_updated",
    "distributed",
    "distributed_with_failures",
    "distribution_timed_out",
    "failed",
    "gave_up_medium_not_ready",
    "rejected",
    "cancelled",
)


def bulk(
    site_code: str,
    *,
    classes: Sequence[str] | None,
    name_pattern: str | None,
    flags: Sequence[int] | None,
    package_ids: Sequence[str] | None,
    ids_file: Path | None,
    exclude: Sequence[str],
    force: bool,
    dry_run: bool,
    wait: bool,
    until: str = "accepted",
    timeout_s: float,
) -> int:
    criteria: dict[str, Any] = {"site_code": site_code, "force": force, "exclude_package_ids": list(exclude)}
    if classes:
        criteria["package_classes"] = list(classes)
    if name_pattern is not None:
        criteria["name_pattern"] = name_pattern
    if flags:
        criteria["pkg_source_flags"] = list(flags)
    ids = list(package_ids or ())
    if ids_file is not None:
        ids.extend(_read_ids(ids_file))
    if ids:
        criteria["package_ids"] = ids
    checked = parse_criteria(criteria)  # a refused criterion is one line and exit 2, Redis or not
    settings = _settings_with_redis()
    submission = enqueue_bulk(app, checked, dry_run=dry_run, until=until, settings=settings)
    accepted = {
        "bulk_id": submission.bulk_id,
        "dry_run": submission.dry_run,
        "package_classes": list(submission.package_classes),
        "until": submission.until,
    }
    print(json.dumps(accepted), flush=True)
    if not wait and not dry_run:
        return 0
    record = _follow(settings, submission.bulk_id, timeout_s=timeout_s)
    Console(stderr=True).print(render_record(record))
    return 0 if record.state == "done" else EXIT_NOT_DONE


def status(bulk_id: str, *, as_json: bool) -> int:
    record = get_bulk(_settings_with_redis(), bulk_id)
    if record is None:
        print(f"sccm-refresh: no bulk job {bulk_id[:128]!r} (unknown, or expired after 7 days)")
        return EXIT_NOT_FOUND
    if as_json:
        print(json.dumps(record_dict(record)))
    else:
        Console().print(render_record(record))
    return 0


def stragglers(bulk_id: str, *, as_json: bool, limit: int) -> int:
    """`status BULK --dps`: the DPs holding the bulk's packages back, the most first."""
    if not 1 <= limit <= MAX_STRAGGLER_DPS:
        raise InvalidRequestError(f"--limit must be between 1 and {MAX_STRAGGLER_DPS}")
    report = get_stragglers(_settings_with_redis(), bulk_id, max_dps=limit)
    if report is None:
        print(f"sccm-refresh: no bulk job {bulk_id[:128]!r} (unknown, or expired after 7 days)")
        return EXIT_NOT_FOUND
    if as_json:
        print(json.dumps(report))
    else:
        Console().print(render_stragglers(report))
    return 0


def render_stragglers(report: dict[str, Any]) -> Table:
    """The stragglers report as a table: one row per DP, then what no DP is named for."""
    title = f"bulk {report['bulk_id']}: {report['state']}, until {report['until']}"
    table = Table(title=f"{title}, {report['following']} still followed", show_header=True)
    table.add_column("DP")
    table.add_column("held back", justify="right")
    for status in STRAGGLER_STATUSES:
        table.add_column(status, justify="right")
    for row in report["dps"]:
        table.add_row(row["dp"], str(row["held"]), *(str(row[status]) for status in STRAGGLER_STATUSES))
    blanks = ("",) * len(STRAGGLER_STATUSES)
    if report["dps_omitted"]:
        table.add_row(f"({report['dps_omitted']} more DPs)", "", *blanks)
    if report["held_at_source"]:
        table.add_row("(site server: source not updated)", str(report["held_at_source"]), *blanks)
    if report["unlisted_rows"]:
        table.add_row("(rows not listed)", str(report["unlisted_rows"]), *blanks)
    if not report["dps"] and not report["held_at_source"] and not report["unlisted_rows"]:
        table.caption = (
            "no DP holds any of its packages back"
            if report["until"] == "distributed"
            else ("not followed to the DPs (submitted without --until distributed)")
        )
    return table


def cancel(bulk_id: str) -> int:
    record = cancel_bulk(_settings_with_redis(), bulk_id)
    if record is None:
        print(f"sccm-refresh: no bulk job {bulk_id[:128]!r} (unknown, or expired after 7 days)")
        return EXIT_NOT_FOUND
    print(json.dumps({"bulk_id": record.bulk_id, "state": record.state, "pending": record.pending}))
    return 0


def record_dict(record: BulkRecord) -> dict[str, Any]:
    return {
        "bulk_id": record.bulk_id,
        "site_code": record.site_code,
        "state": record.state,
        "dry_run": record.dry_run,
        "package_classes": list(record.package_classes),
        "total": record.total,
        "counts": record.counts,
        "pending": record.pending,
        "outstanding": record.outstanding,
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "error": record.error,
        "sample": record.sample,
        "until": record.until,
        "following": record.following,
        "distribution": record.distribution,
    }


def render_record(record: BulkRecord) -> Table:
    """A bulk job as a table: state, total, and how many children ended which way."""
    table = Table(title=f"bulk {record.bulk_id} at {record.site_code}: {record.state}", show_header=True)
    table.add_column("")
    table.add_column("packages", justify="right")
    table.add_row("classes", ", ".join(record.package_classes) or "?")
    table.add_row("selected", "?" if record.total is None else str(record.total))
    if record.dry_run:
        for package in record.sample:
            table.add_row(f"  {package.get('package_id')}", str(package.get("name") or ""))
        return table
    counts = dict(record.counts)
    for name in (*_STATUS_ORDER, *sorted(set(counts) - set(_STATUS_ORDER))):
        if name in counts:
            table.add_row(name, str(counts[name]))
    if record.distribution is not None:
        table.add_row("distributing", str(record.distribution["distributing"]))
    if record.pending or record.outstanding or record.following:
        table.add_row("not finished", str(record.pending + record.outstanding + record.following))
    if record.error:
        table.add_row("error", record.error[:200])
    return table


def _follow(settings: Settings, bulk_id: str, *, timeout_s: float) -> BulkRecord:
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(f"bulk {bulk_id}: enumerating", total=None)
        while True:
            record = get_bulk(settings, bulk_id)
            if record is None:
                raise InvalidRequestError(f"bulk {bulk_id} vanished (expired?)")
            done = sum(record.counts.values())
            progress.update(task, total=record.total, completed=done, description=f"bulk {bulk_id}: {record.state}")
            if record.finished_at is not None or (deadline is not None and time.monotonic() > deadline):
                return record
            time.sleep(_POLL_S)


def _settings_with_redis() -> Settings:
    settings = get_settings()
    # Fail fast, in one line, when Redis is not there (Celery would retry for a minute first).
    require_redis(settings.broker_url, hint=_REDIS_HINT)
    require_redis(settings.redis_url, hint=_REDIS_HINT)
    return settings


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read --ids-file {str(path)!r}: {type(exc).__name__}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
