"""Following N packages x 10 DPs at one site: WS-Man operations per poll interval (`python -m bench.follow_bench`).

    one redis-server (or --redis-url) + the emulator (a child process, real HTTP, Basic) + this
    process reading through the worker's own SiteSnapshots, SccmClient and unmodified pywinrm

N packages (default 10,000) are followed at one site: each is registered in the site's followed
set as its poll would, and one poll per snapshot interval makes the worker read them all
(worker/stores/follow_snapshots.py). The snapshot clock is stepped by `FOLLOW__SNAPSHOT_S`, so
each step is a new poll interval. Measured, in order:

* baseline: per-request reads, each package reading its own status (a Get in phase one, a WQL
  read of its DP rows in phase two) for a sample of packages: operations per 100 packages;
* phase two, every package's DPs installed (State 0: right after DistMgr, the V0/V1 trap, or
  done): the rollup cannot tell V0 from V1, so rows are read for every package; at 1,000 then N
  packages, with this process's RSS after each and the Python heap's peak during each read
  (tracemalloc; flat memory: a chunk at a time); then one more interval, where the rows read are
  reused (the rollup stood still);
* phase one: SourceVersion of N packages (`SMS_PackageBaseclass`, 200 a query);
* then every package is refreshed (Invoke; DistMgr drained, PkgXferMgr held: every copy in
  flight), and phase two is read for `--intervals` intervals: the rollup of every package and
  rows only for a sample (the steady state while copies run). The first interval's snapshot
  answers every one of the N polls (as the other followers would be answered).

Operations are counted on the client (every WS-Man request sent) and checked against the
emulator's own count. JSON on stdout, a table on stderr; exit 1 when the steady state costs more
than `--goal-ops-per-100` (default 1) or is not below the baseline.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

import redis
from pydantic import SecretStr

from bench.cli_common import machine, report_run, say
from bench.emulator_process import EmulatorProcess
from bench.measure import process_memory_kib, ratio
from config.settings import FollowSettings, ProviderSettings, RetryPolicy
from embedded.redis_server import RedisServer
from worker.domain.request import RefreshRequest, parse_request
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport
from worker.stores.follow_snapshots import SiteSnapshots
from worker.stores.keys import RedisKeys
from worker.usecase.attempt import UngatedOperations
from worker.usecase.follow import DirectReader

__all__ = ["build_parser", "main", "run"]

_USERNAME: Final = "LAB\\bench"
_STORAGE_DIRECT: Final = 2
# Classes a refresh of which is refused or not plainly accepted (a task sequence's own rules, an application's content).
_NOT_FOLLOWED: Final = frozenset({"SMS_TaskSequencePackage", "SMS_ContentPackage"})
_ONE_TRY: Final = RetryPolicy(max_attempts=1, initial_backoff_s=0.1, max_backoff_s=0.1)
_POLICY: Final = FollowSettings()  # shipped settings: 30 s snapshots, rows of packages in flight every 600 s
_T0: Final = 1_800_000_000.0
_ZADD_BATCH: Final = 2000


class _CountingTransport(ProviderTransport):
    """The worker's transport, counting the WS-Man requests it sends."""

    sent = 0

    def send(self, envelope: bytes, *, read_timeout_s: int | None = None, timeout_s: float | None = None) -> bytes:
        type(self).sent += 1
        return super().send(envelope, read_timeout_s=read_timeout_s, timeout_s=timeout_s)


class _Rig:
    """Redis, the emulator, a client and a snapshot reader whose clock the bench steps."""

    def __init__(self, redis_url: str, server: EmulatorProcess, password: str, site: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.keys = RedisKeys(f"bench-follow-{secrets.token_hex(4)}")
        self.server = server
        self.site = site
        provider = ProviderSettings(
            endpoint=server.url,
            transport="basic",
            username=_USERNAME,
            password=SecretStr(password),
            allow_unencrypted=True,
            operation_timeout_s=50,
            read_timeout_s=60,
        )
        self.client = SccmClient(
            _CountingTransport(site, provider),
            site,
            RetryPolicy(max_attempts=1, initial_backoff_s=0.1, max_backoff_s=0.1),
        )
        self.now = _T0
        self.reader = SiteSnapshots(self.redis, self.keys, site, self.client, policy=_POLICY, clock=lambda: self.now)
        self.gate = UngatedOperations()

    def request(self, package_id: str, package_class: str = "SMS_Package") -> RefreshRequest:
        return parse_request(
            {"site_code": self.site, "package_id": package_id, "package_class": package_class, "until": "distributed"}
        )

    @contextmanager
    def counted(self) -> Iterator[dict[str, Any]]:
        """The WS-Man operations sent inside the block (client count, checked by the emulator's)."""
        self.server.reset_stats()
        before = _CountingTransport.sent
        figures: dict[str, Any] = {}
        started = time.perf_counter()
        yield figures
        figures["wall_s"] = round(time.perf_counter() - started, 3)
        figures["operations"] = _CountingTransport.sent - before
        self.server.settle(figures["operations"])
        figures["emulator_operations"] = self.server.stats()["operations"]

    def next_interval(self) -> None:
        self.now += _POLICY.snapshot_s

    def register(self, kind: str, package_ids: list[str], v1: dict[str, int] | None = None) -> None:
        """The packages as followed at the site (their polls' registration), polled just now, and
        in phase two the V1 each follower waits for (its rows installed at V1 are left out)."""
        keys = self.keys.follow_keys(self.site, kind, 0)
        self.redis.delete(keys.followed, keys.settled)
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(package_ids), _ZADD_BATCH):
            chunk = package_ids[start : start + _ZADD_BATCH]
            pipe.zadd(keys.followed, dict.fromkeys(chunk, self.now - 1))
            if v1 is not None:
                pipe.zadd(keys.settled, {p: v1[p] for p in chunk})
        pipe.execute()

    def close(self) -> None:
        for key in self.redis.scan_iter(f"{self.keys.prefix}:*"):
            self.redis.delete(key)
        self.redis.close()


def _rss_mib() -> float | None:
    kib = process_memory_kib(os.getpid()).get("VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def _per_100(operations: int, packages: int) -> float:
    return round(operations * 100 / packages, 3)


def _baseline(rig: _Rig, sample: list[tuple[str, str]]) -> dict[str, Any]:
    """Each package reading its own status: a Get (phase one), a WQL read of its rows (phase two)."""
    direct = DirectReader(rig.client)
    requests = [rig.request(pid, cls) for pid, cls in sample]
    with rig.counted() as one:
        for req in requests:
            direct.source_version(req, rig.gate, deadline=None)
    with rig.counted() as two:
        for req in requests:
            direct.dp_rows(req, rig.gate, max_rows=1100, deadline=None)
    return {
        "packages": len(sample),
        "phase_one": {**one, "ops_per_100_packages": _per_100(one["operations"], len(sample))},
        "phase_two": {**two, "ops_per_100_packages": _per_100(two["operations"], len(sample))},
    }


def _snapshot(
    rig: _Rig,
    kind: str,
    package_ids: list[str],
    *,
    v1: dict[str, int] | None = None,
    answer_all: bool = False,
    traced: bool = False,
    fresh: bool = False,
) -> dict[str, Any]:
    """One poll interval: N followed (waiting for `v1` in phase two), one poll reads the snapshot
    (and, `answer_all`, every poll is answered); `traced`: the Python heap's peak during the read
    (tracemalloc, which slows it); `fresh`: no rows kept from earlier intervals."""
    rig.next_interval()
    rig.register(kind, package_ids, v1)
    if fresh:
        rig.redis.delete(rig.keys.follow_keys(rig.site, kind, 0).kept)
    rows_before, in_flight_before = rig.reader.packages_with_rows, rig.reader.packages_in_flight
    kept_before = rig.reader.packages_rows_kept
    first = rig.request(package_ids[0])
    first_v1 = v1[package_ids[0]] if v1 is not None else None
    if traced:
        tracemalloc.start()
    with rig.counted() as figures:
        if kind == "versions":
            rig.reader.source_version(first, rig.gate, deadline=None)
        else:
            rig.reader.dp_rows(first, rig.gate, max_rows=1100, deadline=None, v1=first_v1)
    if traced:
        figures["traced_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / (1 << 20), 2)
        tracemalloc.stop()
    figures["packages"] = len(package_ids)
    figures["ops_per_100_packages"] = _per_100(figures["operations"], len(package_ids))
    if kind == "rows":
        figures["packages_with_rows"] = rig.reader.packages_with_rows - rows_before
        figures["packages_in_flight"] = rig.reader.packages_in_flight - in_flight_before
        figures["packages_rows_kept"] = rig.reader.packages_rows_kept - kept_before
    figures["rss_mib"] = _rss_mib()
    if answer_all:
        figures["answers"] = _answer_all(rig, package_ids, v1)
    return figures


def _answer_all(rig: _Rig, package_ids: list[str], v1: dict[str, int] | None) -> dict[str, Any]:
    """Every follower's poll of the interval, answered from the snapshot (no WS-Man operation)."""
    with rig.counted() as figures:
        answers = [
            rig.reader.dp_rows(
                rig.request(p), rig.gate, max_rows=1100, deadline=None, v1=v1[p] if v1 is not None else None
            )
            for p in package_ids
        ]
    figures["with_rows"] = sum(1 for a in answers if a is not None)
    figures["in_flight"] = sum(1 for a in answers if a is None)
    return figures


def _refresh_all(rig: _Rig, packages: list[tuple[str, str]]) -> dict[str, Any]:
    """Invoke RefreshPkgSource on every package, drain DistMgr, hold PkgXferMgr: every copy in flight."""
    rig.server.admin("POST", "distribution", {"hold": True})
    with rig.counted() as figures:
        accepted = sum(1 for pid, cls in packages if rig.client.refresh(cls, pid) == 0)
    rig.server.admin("POST", "distmgr", {"drain": True})
    figures["accepted"] = accepted
    figures["rows_by_state"] = rig.server.admin("GET", "distribution").get("rows_by_state")
    return figures


def _followable(server: EmulatorProcess, count: int) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(PackageID, class) of `count` packages every refresh of which is accepted, and their SourceVersions."""
    listed = [p for p in server.packages() if p["PkgSourceFlag"] == _STORAGE_DIRECT and p["class"] not in _NOT_FOLLOWED]
    if len(listed) < count:
        raise RuntimeError(f"the emulator has {len(listed)} refreshable packages, {count} wanted")
    return [(p["PackageID"], p["class"]) for p in listed[:count]], {
        p["PackageID"]: int(p["SourceVersion"]) for p in listed[:count]
    }


@contextmanager
def _redis_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="follow-bench-") as tmp, RedisServer(data_dir=Path(tmp)) as server:
        yield server.url


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    password = secrets.token_urlsafe(18)
    started = time.perf_counter()
    with ExitStack() as stack:
        redis_url = stack.enter_context(_redis_url(args.redis_url))
        say(f"starting the emulator: {args.packages} packages x {args.dps} DPs")
        server = EmulatorProcess(
            username=_USERNAME,
            password=password,
            emulator_args=[
                *("--auth", "basic", "--allow-unencrypted", "--compress-share", "0", "--medium-not-ready-share", "0"),
                *("--packages", str(int(args.packages * 1.25) + 50), "--dp-count", str(args.dps)),
                *("--dp-copy-time-s", "3600", "--distmgr-time-per-package-s", "0"),
            ],
        )
        stack.callback(server.stop)
        site = server.admin("GET", "health")["site_code"]
        rig = _Rig(redis_url, server, password, site)
        stack.callback(rig.close)
        packages, versions = _followable(server, args.packages)
        ids = [pid for pid, _cls in packages]
        # Every DP holds the package's current version in State 0: followers waiting for the next
        # one (the V0/V1 trap: DistMgr done, no copy started) must read every row; followers
        # waiting for this one (landed) read none.
        trap = {p: v + 1 for p, v in versions.items()}
        say(f"baseline: {args.baseline_sample} packages reading their own status")
        baseline = _baseline(rig, packages[: args.baseline_sample])
        small = min(args.memory_at, len(ids))
        say(f"phase two, every DP installed at V0 (the trap): {small} then {len(ids)} packages")
        installed = {
            "small": _snapshot(rig, "rows", ids[:small], v1=trap, traced=True, fresh=True),
            "full": _snapshot(rig, "rows", ids, v1=trap, traced=True, fresh=True),
            "next_interval": _snapshot(rig, "rows", ids, v1=trap),
        }
        say("phase two, every DP installed at V1 (landed)")
        landed = _snapshot(rig, "rows", ids, v1=versions, fresh=True)
        say("phase one")
        phase_one = _snapshot(rig, "versions", ids)
        say(f"refreshing {len(ids)} packages (copies held in flight)")
        refreshed = _refresh_all(rig, packages)
        say(f"phase two, copies in flight: {args.intervals} intervals")
        in_flight = [_snapshot(rig, "rows", ids, v1=trap, answer_all=index == 0) for index in range(args.intervals)]
    measured = {
        "baseline": baseline,
        "installed": installed,
        "landed": landed,
        "phase_one": phase_one,
        "refreshed": refreshed,
        "in_flight": in_flight,
    }
    return _report(args, measured, time.perf_counter() - started)


def _report(args: argparse.Namespace, measured: dict[str, Any], wall_s: float) -> tuple[dict[str, Any], list[str]]:
    baseline, installed, phase_one = measured["baseline"], measured["installed"], measured["phase_one"]
    refreshed, in_flight = measured["refreshed"], measured["in_flight"]
    steady = max(interval["ops_per_100_packages"] for interval in in_flight)
    base_one = baseline["phase_one"]["ops_per_100_packages"]
    base_two = baseline["phase_two"]["ops_per_100_packages"]
    small, full = installed["small"]["rss_mib"], installed["full"]["rss_mib"]
    report: dict[str, Any] = {
        "benchmark": "following packages to every DP: WS-Man operations per 100 packages per poll interval",
        "machine": machine(),
        "settings": {
            "packages": args.packages,
            "dps": args.dps,
            "snapshot_s": _POLICY.snapshot_s,
            "rows_refresh_s": _POLICY.rows_refresh_s,
            "packages_per_query": 200,
        },
        "baseline_per_request": baseline,
        "phase_one": phase_one,
        "phase_two_all_installed": installed,
        "phase_two_landed": measured["landed"],
        "refresh": refreshed,
        "phase_two_in_flight": in_flight,
        "summary": {
            "phase_one_ops_per_100": phase_one["ops_per_100_packages"],
            "phase_two_steady_ops_per_100": steady,
            "phase_two_landed_ops_per_100": measured["landed"]["ops_per_100_packages"],
            "phase_two_all_installed_ops_per_100": installed["full"]["ops_per_100_packages"],
            "phase_two_all_installed_next_ops_per_100": installed["next_interval"]["ops_per_100_packages"],
            "baseline_phase_one_ops_per_100": base_one,
            "baseline_phase_two_ops_per_100": baseline["phase_two"]["ops_per_100_packages"],
            "phase_one_vs_baseline": ratio(
                phase_one["ops_per_100_packages"], baseline["phase_one"]["ops_per_100_packages"]
            ),
            "phase_two_steady_vs_baseline": ratio(steady, baseline["phase_two"]["ops_per_100_packages"]),
            "rss_mib_at_small": small,
            "rss_mib_at_full": full,
            "rss_growth_mib": None if small is None or full is None else round(full - small, 1),
            "traced_peak_mib_at_small": installed["small"]["traced_peak_mib"],
            "traced_peak_mib_at_full": installed["full"]["traced_peak_mib"],
        },
        "wall_s": round(wall_s, 1),
    }
    problems = []
    if steady > args.goal_ops_per_100:
        problems.append(
            f"phase two in flight costs {steady} operations per 100 packages (goal {args.goal_ops_per_100})"
        )
    landed = measured["landed"]["ops_per_100_packages"]
    if landed > args.goal_ops_per_100:
        problems.append(f"phase two, every copy landed, costs {landed} operations per 100 packages")
    if phase_one["ops_per_100_packages"] > args.goal_ops_per_100:
        problems.append(f"phase one costs {phase_one['ops_per_100_packages']} operations per 100 packages")
    if steady >= base_two:
        problems.append("phase two batched is not cheaper than per-request reads")
    checked = [("phase one", phase_one), ("landed", measured["landed"]), *(("phase two", f) for f in in_flight)]
    for name, figures in checked:
        if figures["operations"] != figures["emulator_operations"]:
            problems.append(
                f"{name}: {figures['operations']} sent, the emulator counted {figures['emulator_operations']}"
            )
    return report, problems


def render_table(report: dict[str, Any]) -> str:
    s = report["summary"]
    n = report["settings"]["packages"]
    lines = [
        f"following {n} packages x {report['settings']['dps']} DPs at one site (snapshot every "
        f"{report['settings']['snapshot_s']:.0f} s), WS-Man operations per 100 packages per poll interval:",
        f"  {'read':<44}{'batched':>10}{'per request':>14}",
        f"  {'phase one (SourceVersion)':<44}{s['phase_one_ops_per_100']:>10}{s['baseline_phase_one_ops_per_100']:>14}",
        f"  {'phase two, copies in flight (steady)':<44}{s['phase_two_steady_ops_per_100']:>10}"
        f"{s['baseline_phase_two_ops_per_100']:>14}",
        f"  {'phase two, every copy landed (at V1)':<44}{s['phase_two_landed_ops_per_100']:>10}"
        f"{s['baseline_phase_two_ops_per_100']:>14}",
        f"  {'phase two, every DP installed at V0 (trap)':<44}{s['phase_two_all_installed_ops_per_100']:>10}"
        f"{s['baseline_phase_two_ops_per_100']:>14}",
        f"  {'  the next interval (rows kept, rollup still)':<44}{s['phase_two_all_installed_next_ops_per_100']:>10}"
        f"{s['baseline_phase_two_ops_per_100']:>14}",
        f"  RSS after following {report['phase_two_all_installed']['small']['packages']}: {s['rss_mib_at_small']} MiB,"
        f" after {n}: {s['rss_mib_at_full']} MiB (growth {s['rss_growth_mib']} MiB); Python heap peak during"
        f" the read {s['traced_peak_mib_at_small']} / {s['traced_peak_mib_at_full']} MiB; run {report['wall_s']} s",
    ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.follow_bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--packages", type=_positive, default=10_000, help="packages followed at the site")
    parser.add_argument("--dps", type=_positive, default=10, help="distribution points of the site")
    parser.add_argument("--intervals", type=_positive, default=3, help="poll intervals measured with copies in flight")
    parser.add_argument("--memory-at", type=_positive, default=1000, help="the smaller following measured for RSS")
    parser.add_argument("--baseline-sample", type=_positive, default=200, help="packages reading their own status")
    parser.add_argument("--goal-ops-per-100", type=float, default=1.0, help="most operations per 100 packages")
    parser.add_argument("--redis-url", default=None, help="a Redis to use (default: start one)")
    return parser


def main(argv: list[str] | None = None, *, runner: Callable[..., Any] = run) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.packages > 50_000 or args.dps > 250 or args.baseline_sample > args.packages:
        parser.error("--packages at most 50000, --dps at most 250, --baseline-sample at most --packages")
    return report_run(lambda: runner(args), render_table)


if __name__ == "__main__":
    raise SystemExit(main())
