"""The bulk benchmark's measurements, each on its own fresh worker processes (`Rig.lane`).

efficiency  a bulk of N at L ms per operation, cap C, P workers x T threads, against the ideal
            C / (1 operation x L) and the naive sequential loop (Get + Invoke, one thread);
            urgent single requests sent meanwhile (their latency next to a bulk child's)
fanout      time until a bulk's enumeration is done (every child in its pending list), the
            bulk worker's peak RSS, broker messages so far: for each size in the same run
overhead    the worker's CPU per bulk refresh next to a Celery no-op, one worker process
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.bulk_rig import SITE_CODE, Catalogue, Lane, Rig, broker_report
from bench.cli_common import say
from bench.final_collector import FinalCollector
from bench.measure import latency_summary_ms, process_memory_kib, ratio, self_cpu_s
from bench.noop_task import NOOP_TASK
from bench.sent_events import SentTimes
from bench.spy import Spy, top_costs
from producers.bulk import enqueue_bulk, get_bulk, new_bulk_id
from producers.enqueue import enqueue_refresh
from worker.domain.ids import child_request_id
from worker.domain.outcomes import Outcome
from worker.stores.bulk_store import BulkRecord

__all__ = ["EfficiencyPlan", "FanoutPlan", "OverheadPlan", "efficiency", "fanout", "overhead"]

WARMUP_PER_THREAD: Final = 2
WARMUP_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.01
_HOLD_SAMPLE_S: Final = 0.25
OPS_PER_BULK_CHILD: Final = 1  # the Invoke: a child carries a package_hint, so no Get
OPS_PER_NAIVE_REFRESH: Final = 2  # Get, then Invoke


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def _cpu_ms_per(before: Mapping[str, float | None], after: Mapping[str, float | None], count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, start in before.items():
        end = after.get(name)
        out[name] = (
            round((end - start) * 1000.0 / count, 3) if start is not None and end is not None and count else None
        )
    return out


def _warm_up(lane: Lane, threads: int, tag: str) -> None:
    """Each thread most likely opens its WinRM session (NTLM handshake) before anything is timed."""
    count = WARMUP_PER_THREAD * threads * len(lane.workers)
    packages = [lane.catalogue.selected[i % len(lane.catalogue.selected)] for i in range(count)]
    lane.refresh_singles(packages, tag=tag, timeout_s=WARMUP_TIMEOUT_S)


def _wait_record(lane: Lane, bulk_id: str, timeout_s: float, *, enumerated_only: bool = False) -> BulkRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        record = get_bulk(lane.settings, bulk_id)
        if record is not None and (record.enumeration_done if enumerated_only else record.finished_at is not None):
            return record
        if time.monotonic() > deadline:
            raise RuntimeError(f"{lane.name}: bulk {bulk_id} not {'enumerated' if enumerated_only else 'over'}")
        time.sleep(_POLL_S)  # another process's record: there is no event to await


# -- 1 and 3: bulk efficiency, with urgent requests meanwhile -----------------------------------


@dataclass(frozen=True)
class EfficiencyPlan:
    latency_ms: float
    processes: int
    threads: int
    naive_packages: int
    urgent_requests: int
    timeout_s: float


def _naive_loop(rig: Rig, catalogue: Catalogue, count: int) -> dict[str, Any]:
    """What a PowerShell loop does: Get, then Invoke, one package after another, one session."""
    client = rig.sccm_client(catalogue)
    packages = [catalogue.selected[i % len(catalogue.selected)] for i in range(count)]
    return_values: Counter[int] = Counter()
    try:
        client.get_package(catalogue.classes[packages[0]], packages[0])  # authenticate before timing
        started = time.perf_counter()
        for package_id in packages:
            package_class = catalogue.classes[package_id]
            client.get_package(package_class, package_id)
            return_values[client.refresh(package_class, package_id)] += 1
        wall_s = time.perf_counter() - started
    finally:
        client.transport.close()
    return {
        "refreshes": count,
        "wall_s": round(wall_s, 3),
        "refreshes_per_s": _rate(count, wall_s),
        "wsman_operations_per_refresh": OPS_PER_NAIVE_REFRESH,
        "return_values": {str(k): v for k, v in sorted(return_values.items())},
    }


def efficiency(rig: Rig, catalogue: Catalogue, plan: EfficiencyPlan, *, name: str) -> dict[str, Any]:
    """Measurements 1 and 3: the bulk against its ideal and the naive loop; urgent requests meanwhile."""
    catalogue.set_latency_ms(plan.latency_ms)
    say(f"[{name}] naive loop: Get + Invoke x {plan.naive_packages}, one thread, {plan.latency_ms:g} ms per op")
    naive = _naive_loop(rig, catalogue, plan.naive_packages)
    say(f"[{name}]   {naive['refreshes_per_s']} refreshes/s")
    count = len(catalogue.selected)
    ideal = rig.max_concurrency / (OPS_PER_BULK_CHILD * plan.latency_ms / 1000.0) if plan.latency_ms > 0 else None
    with rig.lane(catalogue, name, processes=plan.processes, threads=plan.threads) as lane:
        say(f"[{name}] workers {lane.worker_pids} ({plan.processes} x {plan.threads} threads); warming up")
        _warm_up(lane, plan.threads, f"{name}-warm")
        bulk_id = new_bulk_id()
        children = [child_request_id(bulk_id, package_id) for package_id in catalogue.selected]
        urgent_ids = [f"{name}-urgent-{i}" for i in range(plan.urgent_requests)]
        urgent_packages = [catalogue.spare[i % len(catalogue.spare)] for i in range(plan.urgent_requests)]
        # A request is sent each time this share of the children has ended.
        urgent_marks = [(i + 1) / (plan.urgent_requests + 1) for i in range(plan.urgent_requests)]
        urgent_sent: dict[str, float] = {}
        catalogue.reset_concurrency()
        totals_before = catalogue.call_totals()
        broker_before = lane.broker_counts()
        say(f"[{name}] bulk of {count} (cap {rig.max_concurrency}), {plan.urgent_requests} urgent requests meanwhile")
        with SentTimes(lane.producer) as sent, FinalCollector(rig.store.url, lane.keys, children + urgent_ids) as fc:
            cpu_before = lane.cpu_s()
            started = time.perf_counter()
            started_wall = time.time()
            enqueue_bulk(lane.producer, catalogue.criteria(), bulk_id=bulk_id, queue=lane.queue, settings=lane.settings)
            deadline = started + plan.timeout_s
            holds: list[float] = []
            next_hold_sample = started + _HOLD_SAMPLE_S
            while not fc.wait(_POLL_S) and time.perf_counter() < deadline:
                if time.perf_counter() >= next_hold_sample:
                    next_hold_sample += _HOLD_SAMPLE_S
                    if (hold := lane.slot_hold_s()) is not None:
                        holds.append(hold)
                done = sum(1 for rid in children if rid in fc.arrivals)
                if len(urgent_sent) < len(urgent_ids) and done >= urgent_marks[len(urgent_sent)] * count:
                    index = len(urgent_sent)
                    urgent_sent[urgent_ids[index]] = time.time()
                    enqueue_refresh(
                        lane.producer,
                        queue=lane.queue,
                        site_code=SITE_CODE,
                        package_id=urgent_packages[index],
                        package_class=catalogue.classes[urgent_packages[index]],
                        request_id=urgent_ids[index],
                    )
            cpu_after = lane.cpu_s()
            arrivals = dict(fc.arrivals)
            sent_at = dict(sent.sent)
        broker_after = lane.broker_counts()
        totals_after = catalogue.call_totals()
        peak = catalogue.peak_concurrency()
        record = _wait_record(lane, bulk_id, 30.0)
    finished = [arrivals[rid] for rid in children if rid in arrivals]
    wall_s = max((at for at, _ in finished), default=started) - started
    achieved = _rate(len(finished), wall_s)
    urgent = [_urgent_report(rid, urgent_sent, arrivals, started_wall) for rid in urgent_ids if rid in urgent_sent]
    ops = {k: totals_after.get(k, 0) - totals_before.get(k, 0) for k in ("gets", "invokes", "enumerates", "pulls")}
    return {
        "packages": count,
        "completed": len(finished),
        "complete": len(finished) == count,
        "statuses": dict(Counter(outcome.status for _, outcome in finished)),
        "bulk_state": record.state,
        "latency_ms_per_operation": plan.latency_ms,
        "max_concurrency": rig.max_concurrency,
        "workers": {"processes": plan.processes, "threads": plan.threads},
        "wall_s": round(wall_s, 3),
        "refreshes_per_s": achieved,
        "ideal_refreshes_per_s": round(ideal, 2) if ideal is not None else None,
        "efficiency": ratio(achieved, ideal),
        **_rate_limits(finished, holds, achieved, ideal, rig.max_concurrency),
        "naive": naive,
        "vs_naive": ratio(achieved, naive["refreshes_per_s"], 2),
        "peak_concurrent_operations": peak,
        "wsman_operations": ops,
        "wsman_operations_per_child": ratio(ops["invokes"] + ops["gets"], len(finished) + len(urgent)),
        "broker": broker_report(broker_before, broker_after, len(finished)),
        "cpu_ms_per_refresh": _cpu_ms_per(cpu_before, cpu_after, len(finished)),
        "child_latency_ms": _child_latency(finished, sent_at),
        "urgent": urgent,
    }


def _rate_limits(
    finished: list[tuple[float, Outcome]], holds: list[float], achieved: float, ideal: float | None, limit: int
) -> dict[str, Any]:
    """What bounds the bulk's rate: its steady state, and the slots' own hold time."""
    steady = _steady_rate(sorted(at for at, _ in finished))
    hold_s = statistics.fmean(holds) if holds else None
    ceiling = limit / hold_s if hold_s else None
    return {
        # Between the 10th and the 90th percentile of arrivals: without the start (enumeration
        # holds a slot, the first page must arrive) and the tail (the last children alone).
        "steady_refreshes_per_s": steady,
        "steady_efficiency": ratio(steady, ideal),
        # A slot is held from its grant to its release: the lock, the fence, the Invoke. C slots
        # held this long (the slots' own average, sampled during the run) allow at most
        # C / hold refreshes per second: the ceiling with no slot ever idle.
        "slot_hold_ms": round(hold_s * 1000.0, 2) if hold_s else None,
        "ceiling_by_slot_hold_per_s": round(ceiling, 2) if ceiling else None,
        "slot_occupancy": ratio(achieved, ceiling),
    }


def _child_latency(finished: list[tuple[float, Outcome]], sent_at: Mapping[str, float]) -> dict[str, Any]:
    """A child's latency from its task-sent event to its final outcome, and where the time goes."""
    timed = [outcome for _, outcome in finished if outcome.request_id in sent_at]
    return {
        "from": "task-sent event of the child (a worker refilling the window) to its final outcome",
        **latency_summary_ms((o.finished_at.timestamp() - sent_at[o.request_id]) * 1000.0 for o in timed),
        # From sent until its last delivery started (broker, worker pick-up, slot waits), then that
        # delivery's run (steps, the Invoke, until its final was built).
        "sent_to_last_delivery": latency_summary_ms(
            (o.started_at.timestamp() - sent_at[o.request_id]) * 1000.0 for o in timed
        ),
        "last_delivery_run": latency_summary_ms(o.duration_ms for o in timed),
    }


def _steady_rate(arrivals: list[float]) -> float | None:
    """Refreshes per second between the 10th and the 90th percentile of (sorted) arrival times."""
    if len(arrivals) < 10:
        return None
    low, high = len(arrivals) // 10, (len(arrivals) * 9) // 10
    return _rate(high - low, arrivals[high] - arrivals[low])


def _urgent_report(
    request_id: str, sent: Mapping[str, float], arrivals: Mapping[str, tuple[float, Outcome]], started_wall: float
) -> dict[str, Any]:
    outcome = arrivals[request_id][1] if request_id in arrivals else None
    return {
        "request_id": request_id,
        "in_bulk_selection": False,
        "sent_after_s": round(sent[request_id] - started_wall, 3),
        "status": outcome.status if outcome is not None else None,
        "latency_ms": round((outcome.finished_at.timestamp() - sent[request_id]) * 1000.0, 1) if outcome else None,
        "in_worker_ms": round(outcome.duration_ms, 1) if outcome is not None else None,
    }


# -- 2: fan-out ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FanoutPlan:
    processes: int
    threads: int
    timeout_s: float


def fanout(rig: Rig, catalogue: Catalogue, plan: FanoutPlan, *, name: str) -> dict[str, Any]:
    """Measurement 2 for one catalogue: enumeration time, the bulk worker's RSS, broker messages."""
    catalogue.set_latency_ms(0)
    count = len(catalogue.selected)
    with rig.lane(catalogue, name, processes=plan.processes, threads=plan.threads) as lane:
        _warm_up(lane, plan.threads, f"{name}-warm")
        memory_before = {pid: process_memory_kib(pid) for pid in lane.worker_pids}
        broker_before = lane.broker_counts()
        bulk_id = new_bulk_id()
        say(f"[{name}] bulk of {count}: until enumerated")
        started = time.perf_counter()
        enqueue_bulk(lane.producer, catalogue.criteria(), bulk_id=bulk_id, queue=lane.queue, settings=lane.settings)
        record = _wait_record(lane, bulk_id, plan.timeout_s, enumerated_only=True)
        enumerated_s = time.perf_counter() - started
        broker_after = lane.broker_counts()
        memory_after = {pid: process_memory_kib(pid) for pid in lane.worker_pids}
        bulk_worker = lane.worker_that_logged(f"[{bulk_id}:enumerate]")
    say(f"[{name}]   enumerated in {enumerated_s:.2f} s")
    bulk_pid = bulk_worker.pid if bulk_worker is not None else None
    memory = {
        str(pid): {
            "ran_the_bulk": pid == bulk_pid,
            "before_kib": memory_before[pid],
            "after_kib": memory_after[pid],
            "peak_growth_kib": _growth(memory_before[pid], memory_after[pid]),
        }
        for pid in memory_before
    }
    finished = record.finished_children
    report = broker_report(broker_before, broker_after, finished)
    return {
        "packages": count,
        "total": record.total,
        "enumerated_s": round(enumerated_s, 3),
        "children_per_s": _rate(count, enumerated_s),
        "at_enumeration_done": {
            "pending": record.pending,
            "outstanding": record.outstanding,
            "finished": finished,
        },
        "bulk_worker_pid": bulk_pid,
        "bulk_worker_peak_rss_growth_kib": memory[str(bulk_pid)]["peak_growth_kib"] if bulk_pid else None,
        "bulk_worker_peak_rss_kib": memory_after[bulk_pid].get("VmHWM") if bulk_pid else None,
        "memory": memory,
        "broker": {**report, "messages_per_enumerated_child": ratio(report["messages"], count, 4)},
    }


def _growth(before: Mapping[str, int], after: Mapping[str, int]) -> int | None:
    if "VmHWM" not in before or "VmHWM" not in after:
        return None
    return after["VmHWM"] - before["VmHWM"]


# -- 4: overhead per refresh --------------------------------------------------------------------


@dataclass(frozen=True)
class OverheadPlan:
    threads: int
    noops: int
    timeout_s: float
    # With a directory: one more bulk, not measured, with py-spy sampling the worker.
    profile_dir: Path | None = None


def overhead(rig: Rig, catalogue: Catalogue, plan: OverheadPlan, *, name: str) -> dict[str, Any]:
    """Measurement 4: one worker process's CPU per bulk child next to its CPU per Celery no-op."""
    catalogue.set_latency_ms(0)
    count = len(catalogue.selected)
    with rig.lane(
        catalogue, name, processes=1, threads=plan.threads, extra_args=("--include", "bench.noop_task")
    ) as lane:
        _warm_up(lane, plan.threads, f"{name}-warm")
        _noops(lane, plan.threads * 10, plan.timeout_s)
        say(f"[{name}] {plan.noops} Celery no-ops, worker {lane.worker_pids[0]} ({plan.threads} threads)")
        noop = _noops(lane, plan.noops, plan.timeout_s)
        say(f"[{name}]   {noop['worker_cpu_ms_per_task']} ms of worker CPU per no-op")
        say(f"[{name}] bulk of {count}, no latency")
        broker_before = lane.broker_counts()
        before = lane.cpu_s()
        started = time.perf_counter()
        bulk_id = new_bulk_id()
        enqueue_bulk(lane.producer, catalogue.criteria(), bulk_id=bulk_id, queue=lane.queue, settings=lane.settings)
        record = _wait_record(lane, bulk_id, plan.timeout_s)
        wall_s = time.perf_counter() - started
        after = lane.cpu_s()
        broker_after = lane.broker_counts()
        profile = _profiled_bulk(lane, plan, name) if plan.profile_dir is not None else None
    invoke = _invoke_cpu(rig, catalogue, plan.threads * 25)
    finished = record.finished_children
    cpu = _cpu_ms_per(before, after, finished)
    refresh = {
        "children": finished,
        "statuses": record.counts,
        "wall_s": round(wall_s, 3),
        "refreshes_per_s": _rate(finished, wall_s),
        "cpu_ms_per_refresh": cpu,
        "worker_cpu_ms_per_refresh": cpu["workers"],
        "broker": broker_report(broker_before, broker_after, finished),
    }
    say(f"[{name}]   {cpu['workers']} ms of worker CPU per refresh")
    return {
        "auth": rig.auth,
        "threads": plan.threads,
        "noop": noop,
        "refresh": refresh,
        "ratio_refresh_to_noop": ratio(cpu["workers"], noop["worker_cpu_ms_per_task"], 2),
        "floor": _floor(noop, invoke, cpu["workers"]),
        "profile": profile,
    }


def _floor(noop: Mapping[str, Any], invoke: Mapping[str, Any], refresh_ms: float | None) -> dict[str, Any]:
    """What a bulk refresh cannot cost less than, in parts measured apart in the same run.

    A child is a Celery task (the no-op's cost), one WS-Man Invoke (the client's own CPU, measured
    from this process) and the sending of the next child by the worker (a Celery publish with its
    task-sent event: the no-ops' sender CPU, measured here). What is left is the bookkeeping in
    Redis (fence, lock, slot, coalescing, outcome, bulk counts) and the enumeration.
    """
    parts = {
        "celery_task": noop["worker_cpu_ms_per_task"],
        "wsman_invoke": invoke["cpu_ms_per_invoke"],
        "send_next_child": noop["sender_cpu_ms_per_task"],
    }
    total = round(sum(v for v in parts.values() if v is not None), 3)
    return {
        "parts_ms": parts,
        "total_ms": total,
        "ratio_to_noop": ratio(total, noop["worker_cpu_ms_per_task"], 2),
        "rest_ms": round(refresh_ms - total, 3) if refresh_ms is not None else None,
        "invoke": invoke,
    }


def _invoke_cpu(rig: Rig, catalogue: Catalogue, count: int) -> dict[str, Any]:
    """The SMS Provider client's CPU per Invoke RefreshPkgSource, from this process, one session."""
    client = rig.sccm_client(catalogue)
    packages = [catalogue.selected[i % len(catalogue.selected)] for i in range(count)]
    try:
        client.refresh(catalogue.classes[packages[0]], packages[0])  # authenticate before timing
        before = self_cpu_s()
        started = time.perf_counter()
        for package_id in packages:
            client.refresh(catalogue.classes[package_id], package_id)
        wall_s = time.perf_counter() - started
        cpu_s = self_cpu_s() - before
    finally:
        client.transport.close()
    return {
        "invokes": count,
        "cpu_ms_per_invoke": round(cpu_s * 1000.0 / count, 3),
        "invokes_per_s": _rate(count, wall_s),
    }


def _profiled_bulk(lane: Lane, plan: OverheadPlan, name: str) -> dict[str, Any]:
    """The same bulk again with py-spy sampling the worker: where its CPU goes, function by function."""
    assert plan.profile_dir is not None
    out = plan.profile_dir / f"{name}-worker.collapsed"
    say(f"[{name}] profiling one more bulk with py-spy -> {out}")
    bulk_id = new_bulk_id()
    with Spy(lane.worker_pids[0], out) as spy:
        enqueue_bulk(
            lane.producer, lane.catalogue.criteria(), bulk_id=bulk_id, queue=lane.queue, settings=lane.settings
        )
        _wait_record(lane, bulk_id, plan.timeout_s)
        collapsed = spy.stop()
    return {"collapsed_stacks": str(out), **top_costs(collapsed)}


def _noops(lane: Lane, count: int, timeout_s: float) -> dict[str, Any]:
    before = lane.cpu_s()
    broker_before = lane.broker_counts()
    started = time.perf_counter()
    sender_before = self_cpu_s()
    with lane.producer.producer_or_acquire() as producer:
        for _ in range(count):
            lane.producer.send_task(NOOP_TASK, queue=lane.queue, producer=producer)
    sender_cpu_s = self_cpu_s() - sender_before
    if not lane.wait_broker_drained(timeout_s):
        raise RuntimeError(f"{lane.name}: {count} no-ops not done in {timeout_s:.0f} s")
    wall_s = time.perf_counter() - started
    after = lane.cpu_s()
    broker_after = lane.broker_counts()
    cpu = _cpu_ms_per(before, after, count)
    return {
        "tasks": count,
        "wall_s": round(wall_s, 3),
        "tasks_per_s": _rate(count, wall_s),
        "cpu_ms_per_task": cpu,
        "worker_cpu_ms_per_task": cpu["workers"],
        # The producer's side (this process): what a worker pays when it sends a bulk's next child.
        "sender_cpu_ms_per_task": round(sender_cpu_s * 1000.0 / count, 3),
        "broker": broker_report(broker_before, broker_after, count),
    }
