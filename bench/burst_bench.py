"""A burst of single refreshes through the API (`python -m bench.burst_bench`, `make bench-burst`).

    one redis-server (broker and store, as shipped) + emulator + `sccm-refresh api` + `celery worker`s

Another service posts N single refreshes for one site at once (`POST /v1/refreshes`, at most
`api.max_packages_per_request` per POST, posted back to back). Each needs a Get and an Invoke,
so the provider allows C / (2 x latency) refreshes a second: that ideal is the baseline each
scenario is compared with, in the same run. Measured from the first POST to the last final
outcome (read off the outcome stream); the steady middle drops the first and last 10 % of
finals. The emulator's concurrency meter gives the most operations ever in flight, which must
not exceed the cap. Before the burst, 2 x processes x threads requests warm the workers up
(each thread opens its WinRM session once, as a running service has).

Scenarios (`--scenarios`): `c3-20ms` (500 singles, cap 3, 20 ms per operation) and `c8-100ms`
(1,000 singles, cap 8, 100 ms). Everything else is shipped settings. JSON on stdout, a table on
stderr; exit 0 when every request of every scenario ended `accepted`, 1 otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.bulk_rig import SITE_CODE, Catalogue, Rig
from bench.cli_common import choice_list, machine, report_run, say
from bench.final_collector import FinalCollector
from bench.measure import ratio
from testing.bulk_api import BulkApi

__all__ = ["SCENARIOS", "Scenario", "build_parser", "main", "run"]

_POST_CHUNK: Final = 500  # the API's default api.max_packages_per_request
_SUBMITTER: Final = "bulk-submitter"  # the token name testing.bulk_api writes: request ids are scoped by it
_TRIM: Final = 0.1


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: int
    max_concurrency: int
    latency_ms: float
    goal: float  # the share of the ideal the run must reach

    @property
    def ideal_per_s(self) -> float:
        return self.max_concurrency / (2 * self.latency_ms / 1000.0)


SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario("c3-20ms", 500, 3, 20.0, 0.80),
        Scenario("c8-100ms", 1000, 8, 100.0, 0.90),
    )
}


def _rates(arrivals: list[float], started: float) -> tuple[float, float | None]:
    """Refreshes a second from the first POST to the last final, and in the steady middle."""
    arrivals = sorted(arrivals)
    overall = len(arrivals) / max(arrivals[-1] - started, 1e-9)
    cut = int(len(arrivals) * _TRIM)
    middle = arrivals[cut : len(arrivals) - cut]
    if len(middle) < 2:
        return overall, None
    return overall, (len(middle) - 1) / max(middle[-1] - middle[0], 1e-9)


def _local_ids(tag: str, count: int) -> list[str]:
    """The request ids the API gives `count` requests posted by `_post` (scoped by the token's name)."""
    return [f"{_SUBMITTER}:{tag}-{index:05d}" for index in range(count)]


def _post(api: BulkApi, catalogue: Catalogue, packages: Sequence[str], tag: str, scenario: str) -> None:
    """POST single refreshes of `packages`, `_POST_CHUNK` per request, back to back."""
    for first in range(0, len(packages), _POST_CHUNK):
        items = [
            {
                "site_code": SITE_CODE,
                "package_id": package_id,
                "package_class": catalogue.classes[package_id],
                "request_id": f"{tag}-{first + index:05d}",
            }
            for index, package_id in enumerate(packages[first : first + _POST_CHUNK])
        ]
        response = api.client.post("/v1/refreshes", json={"packages": items})
        if response.status_code != 202:
            raise RuntimeError(f"{scenario}: POST answered {response.status_code} {response.text[:300]}")


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 3)


def _measure(scenario: Scenario, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        rig = Rig.started(
            stack,
            workdir / scenario.name,
            auth=args.auth,
            max_concurrency=scenario.max_concurrency,
            worker_settings={},
            say=say,
            shared_redis=True,
        )
        warmup = args.processes * args.threads * 2
        catalogue = Catalogue.start(
            scenario.requests + warmup,
            password=rig.password,
            auth_modes=[args.auth],
            max_ops_per_user=max(25, 4 * scenario.max_concurrency),
        )
        stack.callback(catalogue.emulator.stop)
        lane = stack.enter_context(rig.lane(catalogue, scenario.name, processes=args.processes, threads=args.threads))
        api = stack.enter_context(BulkApi(lane.env, rig.workdir / f"api-{scenario.name}"))
        catalogue.set_latency_ms(scenario.latency_ms)
        # Every worker thread opens its WinRM session (an NTLM handshake: two more exchanges, each
        # with the operation latency) on its first refresh: a running service has done so already.
        with FinalCollector(rig.store.url, lane.keys, _local_ids("warmup", warmup)) as warming:
            _post(api, catalogue, catalogue.selected[scenario.requests :], "warmup", scenario.name)
            if not warming.wait(args.timeout_s):
                raise RuntimeError(f"{scenario.name}: the warm-up did not finish")
        catalogue.reset_concurrency()
        packages = list(catalogue.selected[: scenario.requests])
        expected = _local_ids("burst", len(packages))
        cpu_before = lane.cpu_s()
        with FinalCollector(rig.store.url, lane.keys, expected) as collector:
            started = time.perf_counter()
            _post(api, catalogue, packages, "burst", scenario.name)
            posted_s = time.perf_counter() - started
            finished = collector.wait(args.timeout_s)
        cpu_after = lane.cpu_s()
        arrivals = [at for at, _ in collector.arrivals.values()]
        statuses: dict[str, int] = {}
        for _, outcome in collector.arrivals.values():
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
        overall, middle = _rates(arrivals, started) if arrivals else (0.0, None)
        cpu = {
            role: (
                None if before is None or cpu_after[role] is None else round(float(cpu_after[role] or 0) - before, 3)
            )
            for role, before in cpu_before.items()
        }
        return {
            "scenario": scenario.name,
            "requests": scenario.requests,
            "max_concurrency": scenario.max_concurrency,
            "latency_ms": scenario.latency_ms,
            "ideal_per_s": round(scenario.ideal_per_s, 2),
            "goal_share_of_ideal": scenario.goal,
            "finished": len(collector.arrivals),
            "all_finished": finished,
            "statuses": statuses,
            "post_s": round(posted_s, 3),
            "first_post_to_last_final_s": round(max(arrivals) - started, 3) if arrivals else None,
            "per_s": round(overall, 2),
            "steady_per_s": None if middle is None else round(middle, 2),
            "share_of_ideal": ratio(overall, scenario.ideal_per_s),
            "steady_share_of_ideal": ratio(middle, scenario.ideal_per_s),
            "peak_operations_in_flight": catalogue.peak_concurrency(),
            "cpu_s": cpu,
        }


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    results = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="burst-bench-") as tmp:
        for name in args.scenarios:
            scenario = SCENARIOS[name]
            if args.requests is not None:
                scenario = Scenario(name, args.requests, scenario.max_concurrency, scenario.latency_ms, scenario.goal)
            cap, latency = scenario.max_concurrency, scenario.latency_ms
            say(f"[burst]    {name}: {scenario.requests} singles, cap {cap}, {latency} ms per operation")
            result = _measure(scenario, args, Path(tmp))
            results.append(result)
            if not result["all_finished"] or result["statuses"] != {"accepted": scenario.requests}:
                problems.append(f"{name}: {result['finished']}/{scenario.requests} finished, {result['statuses']}")
            if result["peak_operations_in_flight"] > scenario.max_concurrency:
                problems.append(f"{name}: {result['peak_operations_in_flight']} operations in flight > cap")
    report = {
        "benchmark": "burst",
        "machine": machine(),
        "parameters": {"auth": args.auth, "processes": args.processes, "threads": args.threads},
        "results": results,
        "goals": {
            r["scenario"]: {
                "share_of_ideal": r["share_of_ideal"],
                "goal": r["goal_share_of_ideal"],
                "met": (r["share_of_ideal"] or 0) >= r["goal_share_of_ideal"],
            }
            for r in results
        },
    }
    return report, problems


def render_table(report: dict[str, Any]) -> str:
    lines = [
        "scenario   requests cap  ms  ideal/s  per_s  share  steady  peak_ops  goal  worker_cpu_s",
    ]
    for r in report["results"]:
        goal = report["goals"][r["scenario"]]
        lines.append(
            f"{r['scenario']:<10} {r['requests']:>8} {r['max_concurrency']:>3} {r['latency_ms']:>4.0f} "
            f"{r['ideal_per_s']:>8.1f} {r['per_s']:>6.1f} {r['share_of_ideal'] or 0:>6.3f} "
            f"{r['steady_share_of_ideal'] or 0:>7.3f} {r['peak_operations_in_flight']:>9} "
            f"{'met' if goal['met'] else 'MISSED':>5} {r['cpu_s'].get('workers')}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.burst_bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenarios", type=choice_list(tuple(SCENARIOS)), default=tuple(SCENARIOS))
    parser.add_argument("--auth", choices=("ntlm", "basic"), default="ntlm", help="WinRM authentication")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="time cap per scenario")
    parser.add_argument("--requests", type=int, default=None, help="requests per scenario instead of its own count")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_run(lambda: run(args), render_table)


if __name__ == "__main__":
    raise SystemExit(main())
