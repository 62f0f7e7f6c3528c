"""HTTP API latency and throughput next to a no-op uvicorn route (`python -m bench.api_bench`).

One run, one machine, the same client for every scenario:

    noop GET / noop POST        bench/noop_app.py: FastAPI no-op routes under the same uvicorn settings
    floor GET / floor POST      the same, plus the one Redis round trip the API route cannot avoid
    api GET /healthz            our app (middleware, routing), no I/O
    api POST /v1/refreshes      one package: auth, strict validation, coalescing read + LPUSH (one round trip)
    api GET /v1/refreshes/{id}  auth, one HGETALL, the outcome parsed and returned

Each scenario: `--sequential` requests one after another on one keep-alive connection (p50,
p99 latency), then `--threads` clients for `--seconds` (requests/s). The API's Redis is our own
redis-server; POSTs enqueue to a queue no worker consumes. Prints a table on stderr and JSON
on stdout; the goal it checks: API p50 within 2x of the matching no-op route's p50. The floor
scenarios show how much of that ratio the one Redis round trip takes before the API does anything.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from api.tokens import token_line
from bench.measure import percentile, process_tree_cpu_s, ratio
from bench.noop_app import FLOOR_KEY_ENV, FLOOR_LIST_ENV
from embedded.redis_server import RedisServer
from testing.api_process import ApiServer
from worker.domain.outcomes import AttemptInfo, Outcome, RequestInfo
from worker.stores.keys import RedisKeys
from worker.stores.outcome_writer import OutcomePublisher
from worker.stores.redis_client import redis_from_url

__all__ = ["main"]

TOKEN: Final = f"bench-{uuid.uuid4().hex}"
GOAL_RATIO: Final = 2.0
DEFAULT_SEQUENTIAL: Final = 1000
DEFAULT_THREADS: Final = 8
DEFAULT_SECONDS: Final = 5.0
WARMUP: Final = 200
SEEDED_REQUEST: Final = "bench-request-1"
PACKAGE_BODY: Final = json.dumps({"packages": [{"site_code": "PS1", "package_id": "PS100012"}]}).encode()


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # "noop" or "api"
    method: str
    path: str
    body: bytes | None
    expect: int
    baseline: str | None = None  # the no-op scenario it is compared with
    floor: str | None = None  # the no-op + Redis scenario: what the route cannot go below


SCENARIOS: Final = (
    Scenario("noop GET", "noop", "GET", "/noop", None, 200),
    Scenario("noop POST", "noop", "POST", "/noop", PACKAGE_BODY, 202),
    Scenario("floor GET (noop + HGETALL)", "noop", "GET", "/noop-redis", None, 200, baseline="noop GET"),
    Scenario("floor POST (noop + LPUSH)", "noop", "POST", "/noop-redis", PACKAGE_BODY, 202, baseline="noop POST"),
    Scenario("api GET /healthz", "api", "GET", "/healthz", None, 200, baseline="noop GET"),
    Scenario(
        "api POST /v1/refreshes",
        "api",
        "POST",
        "/v1/refreshes",
        PACKAGE_BODY,
        202,
        baseline="noop POST",
        floor="floor POST (noop + LPUSH)",
    ),
    Scenario(
        "api GET /v1/refreshes/{id}",
        "api",
        "GET",
        f"/v1/refreshes/{SEEDED_REQUEST}",
        None,
        200,
        baseline="noop GET",
        floor="floor GET (noop + HGETALL)",
    ),
)


# The goal: these within GOAL_RATIO of their no-op baseline's p50 (healthz is shown for scale).
GOAL_SCENARIOS: Final = ("api POST /v1/refreshes", "api GET /v1/refreshes/{id}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Client:
    """One keep-alive connection (stdlib http.client: the lightest client, the same for all)."""

    def __init__(self, url: str, scenario: Scenario) -> None:
        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self._scenario = scenario
        self._headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def call(self) -> bool:
        s = self._scenario
        self._conn.request(s.method, s.path, body=s.body, headers=self._headers)
        response = self._conn.getresponse()
        response.read()
        return response.status == s.expect

    def close(self) -> None:
        self._conn.close()


def _sequential(url: str, scenario: Scenario, count: int) -> dict[str, Any]:
    client = _Client(url, scenario)
    try:
        for _ in range(WARMUP):
            client.call()
        samples: list[float] = []
        errors = 0
        for _ in range(count):
            started = time.perf_counter()
            ok = client.call()
            samples.append((time.perf_counter() - started) * 1000.0)
            errors += not ok
    finally:
        client.close()
    ordered = sorted(samples)
    return {
        "requests": count,
        "errors": errors,
        "p50_ms": round(percentile(ordered, 0.50), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "mean_ms": round(sum(ordered) / len(ordered), 3),
    }


def _concurrent(url: str, scenario: Scenario, threads: int, seconds: float, server_pid: int) -> dict[str, Any]:
    counts = [0] * threads
    errors = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at: list[float] = []

    def drive(index: int) -> None:
        client = _Client(url, scenario)
        try:
            start.wait()
            while time.perf_counter() < stop_at[0]:
                ok = client.call()
                counts[index] += 1
                errors[index] += not ok
        finally:
            client.close()

    workers = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    cpu_before = process_tree_cpu_s(server_pid)
    began = time.perf_counter()
    stop_at.append(began + seconds)
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    cpu_after = process_tree_cpu_s(server_pid)
    total = sum(counts)
    cpu_ms = (cpu_after - cpu_before) * 1000.0 / total if cpu_before is not None and cpu_after and total else None
    return {
        "threads": threads,
        "requests": total,
        "errors": sum(errors),
        "requests_per_s": round(total / elapsed, 1),
        "server_cpu_ms_per_request": round(cpu_ms, 3) if cpu_ms is not None else None,
    }


def _seed_outcome(redis_url: str, keys: RedisKeys) -> None:
    """One request with a final outcome, for GET /v1/refreshes/{id} to read."""
    now = datetime.now(UTC)
    request = RequestInfo(SEEDED_REQUEST, "PS1", "SMS_Package", "PS100012", now, correlation_id="bench")
    run = AttemptInfo(attempt=1, attempts=1, started_at=now, finished_at=now, worker="bench:1")
    outcome = Outcome.succeeded(request, run, source_version_before=3, source_version_after=4)
    client = redis_from_url(redis_url)
    try:
        OutcomePublisher(client, keys).publish(outcome)
    finally:
        client.close()


@contextmanager
def _servers(tmp: Path) -> Iterator[dict[str, ApiServer]]:
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(data_dir=tmp / "redis"))
        keys = RedisKeys(f"bench-{uuid.uuid4().hex[:8]}")
        _seed_outcome(redis_server.url, keys)
        token_file = tmp / "tokens"
        token_file.write_text(token_line(TOKEN, "submit", "bench") + "\n", encoding="utf-8")
        token_file.chmod(0o600)  # the API refuses a token file others may write
        env = {
            **_clean_env(),
            "SCCM_REFRESH_BROKER_URL": redis_server.url,
            "SCCM_REFRESH_REDIS_URL": redis_server.url,
            "SCCM_REFRESH_KEY_PREFIX": keys.prefix,
            "SCCM_REFRESH_QUEUE": f"q-{keys.prefix}",
            "SCCM_REFRESH_API__TOKEN_FILE": str(token_file),
            "SCCM_REFRESH_LOG_LEVEL": "WARNING",
        }
        api = stack.enter_context(ApiServer(env, tmp / "api.log"))
        floor_env = {**env, FLOOR_KEY_ENV: keys.request_state(SEEDED_REQUEST), FLOOR_LIST_ENV: f"floor-{keys.prefix}"}
        noop = stack.enter_context(ApiServer(floor_env, tmp / "noop.log", module=("bench.noop_app",)))
        yield {"api": api, "noop": noop}


def _clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("SCCM_REFRESH_")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp, _servers(Path(tmp)) as servers:
        results: dict[str, Any] = {}
        for scenario in SCENARIOS:
            server = servers[scenario.server]
            _say(f"[bench] {scenario.name}")
            results[scenario.name] = {
                "sequential": _sequential(server.url, scenario, args.sequential),
                "concurrent": _concurrent(server.url, scenario, args.threads, args.seconds, server.pid),
            }
    comparisons: dict[str, dict[str, Any]] = {
        s.name: {
            "baseline": s.baseline,
            "p50_ratio": _p50_ratio(results, s.name, s.baseline),
            "throughput_ratio": ratio(
                results[s.name]["concurrent"]["requests_per_s"], results[s.baseline]["concurrent"]["requests_per_s"]
            ),
            "floor": s.floor,
            "p50_ratio_to_floor": _p50_ratio(results, s.name, s.floor) if s.floor else None,
        }
        for s in SCENARIOS
        if s.baseline is not None
    }
    goal_met = all(
        comparisons[name]["p50_ratio"] is not None and comparisons[name]["p50_ratio"] <= GOAL_RATIO
        for name in GOAL_SCENARIOS
    )
    return {
        "benchmark": "api",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "parameters": {"sequential": args.sequential, "threads": args.threads, "seconds": args.seconds},
        "results": results,
        "comparisons": comparisons,
        "goal": {
            "p50_within": GOAL_RATIO,
            "scenarios": list(GOAL_SCENARIOS),
            "met": goal_met,
            # Above GOAL_RATIO, no route doing that Redis round trip can meet the goal on this machine.
            "floor_p50_ratios": {
                s.name: comparisons[s.floor]["p50_ratio"] for s in SCENARIOS if s.name in GOAL_SCENARIOS and s.floor
            },
        },
    }


def _p50_ratio(results: Mapping[str, Any], name: str, baseline: str) -> float | None:
    return ratio(results[name]["sequential"]["p50_ms"], results[baseline]["sequential"]["p50_ms"])


def table(report: Mapping[str, Any]) -> str:
    header = f"{'scenario':<30} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'cpu ms/req':>10} {'p50 x':>6} {'x floor':>7}"
    lines = [header, "-" * len(header)]
    for name, result in report["results"].items():
        seq, conc = result["sequential"], result["concurrent"]
        cpu = conc["server_cpu_ms_per_request"]
        comparison = report["comparisons"].get(name, {})
        p50x, floorx = comparison.get("p50_ratio"), comparison.get("p50_ratio_to_floor")
        lines.append(
            f"{name:<30} {seq['p50_ms']:>8.3f} {seq['p99_ms']:>8.3f} {conc['requests_per_s']:>9.1f} "
            f"{cpu if cpu is not None else '-':>10} {p50x if p50x is not None else '':>6} "
            f"{floorx if floorx is not None else '':>7}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sequential", type=int, default=DEFAULT_SEQUENTIAL, help="sequential requests per scenario")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="client threads of the throughput run")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each throughput run")
    return parser


def main(argv: list[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 10 <= args.sequential <= 1_000_000 or not 1 <= args.threads <= 256 or not 0 < args.seconds <= 600:
        parser.error("--sequential in [10, 1e6], --threads in [1, 256], --seconds in (0, 600]")
    report = run(args)
    _say(table(report))
    out(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
