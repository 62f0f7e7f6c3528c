"""Wait for requests (or a bulk job's children) to end, then check each has exactly one final outcome.

Run where the outcome Redis is reachable (scripts/compose-smoke runs it inside the worker container):

    python -m ops.smoke_check requests ID [ID ...] [--timeout-s 300]
    python -m ops.smoke_check bulk BULK_ID [--timeout-s 300]

Prints a summary (final outcomes by status) and exits 0 when every request has exactly one final
outcome, 1 otherwise (missing after the timeout, or duplicated).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from redis import Redis

from config.settings import get_settings
from worker.domain.ids import claimed_bulk, is_bulk_id
from worker.domain.outcomes import Outcome
from worker.stores.keys import RedisKeys
from worker.stores.outcome_reader import read_stream
from worker.stores.redis_client import redis_from_url

__all__ = ["Verdict", "judge", "main"]

_POLL_S: Final = 1.0
_READ_BATCH: Final = 10_000
_BULK_OVER: Final = frozenset({"done", "cancelled", "failed"})


@dataclass(frozen=True)
class Verdict:
    """Final outcomes per request id: which are missing, which are duplicated, and the status counts."""

    expected: int
    missing: tuple[str, ...]
    duplicated: tuple[str, ...]
    statuses: Counter[str]
    workers: Counter[str]

    @property
    def ok(self) -> bool:
        return self.expected > 0 and not self.missing and not self.duplicated

    def summary(self) -> str:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(self.statuses.items())) or "none"
        by_worker = ", ".join(f"{worker} {n}" for worker, n in sorted(self.workers.items())) or "none"
        head = f"{self.expected} request(s); final outcomes: {counts}; by worker: {by_worker}"
        if self.ok:
            return f"{head}\nOK: every request has exactly one final outcome"
        problems = []
        if self.expected == 0:
            problems.append("no requests to check")
        if self.missing:
            problems.append(f"{len(self.missing)} without a final outcome (e.g. {', '.join(self.missing[:3])})")
        if self.duplicated:
            problems.append(f"{len(self.duplicated)} with more than one (e.g. {', '.join(self.duplicated[:3])})")
        return f"{head}\nFAILED: {'; '.join(problems)}"


def judge(outcomes: Iterable[Outcome], request_ids: Iterable[str]) -> Verdict:
    """Pure: count the final outcomes of each expected request."""
    wanted = set(request_ids)
    finals = [o for o in outcomes if o.final and o.request_id in wanted]
    per_request = Counter(o.request_id for o in finals)
    return Verdict(
        expected=len(wanted),
        missing=tuple(sorted(wanted - set(per_request))),
        duplicated=tuple(sorted(rid for rid, n in per_request.items() if n > 1)),
        statuses=Counter(o.status for o in finals),
        workers=Counter(o.worker for o in finals),
    )


def _all_outcomes(client: Redis, keys: RedisKeys) -> list[Outcome]:
    outcomes: list[Outcome] = []
    after = "0-0"
    while True:
        batch = read_stream(client, keys, after_id=after, count=_READ_BATCH)
        if not batch:
            return outcomes
        outcomes += [entry.outcome for entry in batch]
        after = batch[-1].stream_id


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)  # another process's progress, read from Redis: nothing to await
    return True


def check_requests(request_ids: Sequence[str], *, timeout_s: float) -> Verdict:
    settings = get_settings()
    keys = RedisKeys(settings.key_prefix)
    client = redis_from_url(settings.redis_url)
    try:
        _wait(lambda: not judge(_all_outcomes(client, keys), request_ids).missing, timeout_s)
        return judge(_all_outcomes(client, keys), request_ids)
    finally:
        client.close()


def check_bulk(bulk_id: str, *, timeout_s: float) -> tuple[Verdict, str]:
    """Wait for the bulk job to be over, then judge its children (as many as its total)."""
    from producers.bulk import get_bulk  # noqa: PLC0415 - only this check needs the bulk producer

    settings = get_settings()
    keys = RedisKeys(settings.key_prefix)

    def over() -> bool:
        record = get_bulk(settings, bulk_id)
        return record is not None and record.state in _BULK_OVER

    _wait(over, timeout_s)
    record = get_bulk(settings, bulk_id)
    client = redis_from_url(settings.redis_url)
    try:
        outcomes = _all_outcomes(client, keys)
        # Children: those the bulk listed (while it lives) and the outcomes under a child's id (a
        # correlation id proves nothing: any producer can name a bulk there).
        listed = client.smembers(keys.bulk_keys(bulk_id).children) if is_bulk_id(bulk_id) else set()
        children = {str(c) for c in listed}
        children |= {o.request_id for o in outcomes if claimed_bulk(o.request_id) == bulk_id}
    finally:
        client.close()
    verdict = judge(outcomes, children)
    if record is not None and record.total is not None and record.total > len(children):
        unseen = record.total - len(children)
        verdict = replace(verdict, missing=(*verdict.missing, f"<{unseen} child(ren) without any outcome>"))
    state = "unknown bulk" if record is None else f"bulk {bulk_id}: {record.state}, total {record.total}"
    return verdict, state


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.smoke_check")
    sub = parser.add_subparsers(dest="what", required=True)
    requests = sub.add_parser("requests")
    requests.add_argument("request_ids", nargs="+")
    requests.add_argument("--timeout-s", type=float, default=300.0)
    bulk = sub.add_parser("bulk")
    bulk.add_argument("bulk_id")
    bulk.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.what == "requests":
        verdict = check_requests(args.request_ids, timeout_s=args.timeout_s)
    else:
        verdict, state = check_bulk(args.bulk_id, timeout_s=args.timeout_s)
        print(state)
    print(verdict.summary(), flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
