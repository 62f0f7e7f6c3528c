"""Numbers for the benchmarks: latency summaries, ratios, and process CPU from /proc.

The statistics and the /proc/<pid>/stat parser are pure; `process_tree_cpu_s` and
`self_cpu_s` are the two thin readers (Linux /proc, getrusage).
"""

from __future__ import annotations

import math
import os
import resource
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "ProcStat",
    "broker_command_counts",
    "busy_cores",
    "latency_summary_ms",
    "parse_proc_stat",
    "parse_proc_status_kib",
    "percentile",
    "process_memory_kib",
    "process_tree_cpu_s",
    "ratio",
    "self_cpu_s",
]

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC: Final = Path("/proc")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none).

    The emulator computes its own server-side percentiles the same way; it is independent of
    everything else in the repository, so the few lines are not shared with it.
    """
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_summary_ms(samples_ms: Iterable[float]) -> dict[str, float | int]:
    """count, mean, p50, p95 and max of latency samples in milliseconds."""
    ordered = sorted(samples_ms)
    return {
        "count": len(ordered),
        "mean": round(statistics.fmean(ordered), 2) if ordered else 0.0,
        "p50": round(percentile(ordered, 0.50), 2),
        "p95": round(percentile(ordered, 0.95), 2),
        "max": round(ordered[-1], 2) if ordered else 0.0,
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """numerator / denominator, None when either is unknown or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def busy_cores(cpu_ms_per_request: float | None, requests_per_s: float) -> float | None:
    """How many cores a process kept busy: CPU per request times the request rate."""
    if cpu_ms_per_request is None:
        return None
    return round(cpu_ms_per_request * requests_per_s / 1000.0, 2)


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the benchmarks need (CPU in clock ticks)."""

    ppid: int
    cpu_ticks: int  # utime + stime, all threads
    reaped_children_ticks: int  # cutime + cstime: children that exited and were waited for


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line (proc(5)); the command name may hold spaces and parentheses."""
    fields = text.rsplit(")", 1)[1].split()
    # After "(comm)": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    return ProcStat(
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        reaped_children_ticks=int(fields[13]) + int(fields[14]),
    )


def _read_proc_stat(pid: int) -> ProcStat | None:
    try:
        return parse_proc_stat((_PROC / str(pid) / "stat").read_text())
    except (OSError, IndexError, ValueError):
        return None  # gone meanwhile, or not Linux


def process_tree_cpu_s(root_pid: int | None) -> float | None:
    """CPU seconds of a process, its live descendants and its reaped children; None without /proc."""
    if root_pid is None:
        return None
    root = _read_proc_stat(root_pid)
    if root is None:
        return None
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _read_proc_stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat.ppid, []).append(int(entry.name))
    ticks = root.cpu_ticks + root.reaped_children_ticks
    pending = list(children.get(root_pid, []))
    seen = {root_pid}
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stat = _read_proc_stat(pid)
        if stat is not None:
            ticks += stat.cpu_ticks
        pending.extend(children.get(pid, []))
    return ticks / _CLK_TCK


def self_cpu_s() -> float:
    """CPU seconds of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_proc_status_kib(text: str, fields: Iterable[str] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """The named memory fields of a /proc/<pid>/status text, in KiB (absent ones are left out)."""
    wanted = set(fields)
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if name in wanted and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            found[name] = int(parts[0])
    return found


def process_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of a process in KiB; empty without /proc."""
    try:
        return parse_proc_status_kib((_PROC / str(pid) / "status").read_text())
    except OSError:
        return {}


def broker_command_counts(commandstats: Mapping[str, Any]) -> dict[str, int]:
    """Calls per command from redis-py's parsed `INFO commandstats` (`cmdstat_lpush` -> `lpush`)."""
    counts: dict[str, int] = {}
    for name, stats in commandstats.items():
        if name.startswith("cmdstat_") and isinstance(stats, Mapping) and "calls" in stats:
            counts[name.removeprefix("cmdstat_")] = int(stats["calls"])
    return counts
