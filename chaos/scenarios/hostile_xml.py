"""Hostile XML from a hostile provider: every reply ends as a typed result or a RefreshError.

A hostile WS-Man server (chaos.hostile_wsman) answers each Get / Invoke RefreshPkgSource with a
reply of chaos.hostile_replies (DTDs and entity expansion after a long comment, UTF-16 with a
DTD, 2 million nested elements, 3.5 million siblings, faults with random codes, UTF-16 faults at
HTTP 500, truncated XML, wrong RelatesTo, random bytes ...). The client is the product's
`SccmClient` built by `worker.runtime.client_for` with real pywinrm, in a child process
(chaos.xml_client) whose memory is measured per reply.

Columns: requests = replies tried (cases); exactly-one-final = cases that ended as a typed result
or a `RefreshError` within the memory bound; lost = cases that escaped as any other exception,
or crashed or hung the client; duplicate finals and extra provider refreshes do not apply (n/a);
drain time = the whole run. Promise: 0 lost, peak memory added by any one reply at most
MEMORY_BOUND_MB, no password in what the errors say.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from chaos.hostile_replies import plan_kinds
from chaos.hostile_wsman import HostileWsmanServer
from chaos.report import Check, Row
from chaos.scenario import RunOptions, Scenario, leak_check
from chaos.xml_client import SITE_CODE
from embedded.worker_process import worker_environment
from testing.fixtures_pipeline import FAST_RETRY_ENV

__all__ = ["MEMORY_BOUND_MB", "SCENARIO"]

NAME: Final = "hostile-xml"
USERNAME: Final = "HX\\chaos-hostile"
MEMORY_BOUND_MB: Final = 200.0
CASE_TIMEOUT_S: Final = 60.0
START_TIMEOUT_S: Final = 60.0
_TYPED: Final = frozenset({"result", "refresh_error"})
_CHECKOUT: Final = Path(__file__).resolve().parents[2]


class _Child:
    """One xml_client process; its JSON lines arrive on a queue (a reader thread bounds every wait)."""

    def __init__(self, env: dict[str, str], control_url: str, first: int, cases: int, log: Path) -> None:
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaos.xml_client",
                "--control-url",
                control_url,
                "--first-case",
                str(first),
                "--cases",
                str(cases),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name="xml-client-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue  # not ours (a library printing): only report lines count
        self.lines.put(None)  # end of output: the process is exiting

    def next(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=10)
        self._log.close()
        return code


def run_cases(env: dict[str, str], server: HostileWsmanServer, count: int, log: Path) -> Iterator[dict[str, Any]]:
    """One report per case; a child that crashes or hangs is replaced, starting at the next case."""
    case = 0
    while case < count:
        child = _Child(env, server.control_url, case, count, log)
        try:
            ready = child.next(START_TIMEOUT_S)
            if ready is None or not ready.get("ready"):
                raise RuntimeError(f"xml_client did not start; see {log}")
            while case < count:
                report = child.next(CASE_TIMEOUT_S)
                if report is None:
                    alive = child.process.poll() is None
                    yield {
                        "case": case,
                        "outcome": "hung" if alive else "crashed",
                        "type": "hung" if alive else "crashed",
                    }
                    case += 1
                    break
                yield report
                case = int(report["case"]) + 1
        finally:
            child.stop()


def run(options: RunOptions) -> Row:
    workdir = options.workdir / NAME
    workdir.mkdir(parents=True, exist_ok=True)
    password = f"Hostile-{secrets.token_urlsafe(18)}"
    count = options.requests
    kinds = plan_kinds(count, options.seed)
    server = HostileWsmanServer(username=USERNAME, password=password, kinds=kinds, seed=options.seed).start()
    password_file = workdir / "provider-password"
    password_file.touch(mode=0o600)
    password_file.write_text(password, encoding="utf-8")
    env = worker_environment(
        redis_url="redis://127.0.0.1:1/0",  # never used: the client publishes nothing
        key_prefix="chaos-xml",
        queue="chaos-xml",
        providers={
            SITE_CODE: {
                "endpoint": server.url,
                "transport": "basic",
                "username": USERNAME,
                "password_file": str(password_file),
                "allow_unencrypted": "true",
                "operation_timeout_s": "2",
                "read_timeout_s": "20",
            }
        },
        extra=FAST_RETRY_ENV,
    )
    # The child imports chaos from this checkout, wherever the command was started.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_CHECKOUT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    try:
        reports = list(run_cases(env, server, count, workdir / "xml-client.log"))
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    return summarize(reports, kinds, elapsed, password, workdir / "xml-client.log")


def summarize(reports: list[dict[str, Any]], kinds: list[str], elapsed_s: float, password: str, log: Path) -> Row:
    by_outcome: Counter[str] = Counter()
    escaped: dict[str, Counter[str]] = defaultdict(Counter)
    peak_by_kind: dict[str, float] = {}
    seconds_by_kind: dict[str, float] = {}
    over_bound: Counter[str] = Counter()
    typed_within = 0
    for report in reports:
        kind = kinds[int(report["case"])]
        outcome = str(report["outcome"])
        by_outcome[outcome] += 1
        peak = float(report.get("peak_growth_mb") or 0.0)
        peak_by_kind[kind] = max(peak_by_kind.get(kind, 0.0), peak)
        seconds_by_kind[kind] = max(seconds_by_kind.get(kind, 0.0), float(report.get("seconds") or 0.0))
        if peak > MEMORY_BOUND_MB:
            over_bound[kind] += 1
        if outcome in _TYPED:
            typed_within += peak <= MEMORY_BOUND_MB
        else:
            escaped[kind][str(report.get("type"))] += 1
    lost = sum(count for outcome, count in by_outcome.items() if outcome not in _TYPED)
    errors = {f"case {r['case']} error": json.dumps(r.get("error")) for r in reports if r.get("error")}
    client_log = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    checks = [
        Check(
            f"every reply within {MEMORY_BOUND_MB:.0f} MB of added peak memory",
            not over_bound,
            f"over the bound: {dict(over_bound)}; worst by kind (MB): {_worst(peak_by_kind)}" if over_bound else "",
        ),
        leak_check(
            {"PROVIDER_PASSWORD": password},
            {**errors, "client log": client_log},
            username=USERNAME,
            what="no password in errors or client output",
        ),
    ]
    return Row(
        scenario=NAME,
        requests=len(reports),
        exactly_one_final=typed_within,
        lost=lost,
        duplicate_finals=None,
        extra_refreshes=None,
        drain_s=elapsed_s,
        checks=tuple(checks),
        details={
            "outcomes": dict(by_outcome),
            "escaped_by_kind": {kind: dict(types) for kind, types in sorted(escaped.items())},
            "lost_by_label": {kind: sum(types.values()) for kind, types in sorted(escaped.items())},
            "peak_growth_mb_by_kind": _worst(peak_by_kind),
            "slowest_seconds_by_kind": _worst(seconds_by_kind),
        },
    )


def _worst(peaks: dict[str, float]) -> dict[str, float]:
    return dict(sorted(peaks.items(), key=lambda item: -item[1]))


SCENARIO: Final = Scenario(
    NAME,
    f"hostile provider replies end as a typed result or RefreshError, each within {MEMORY_BOUND_MB:.0f} MB",
    run,
)
