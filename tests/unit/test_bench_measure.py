"""The benchmarks' number helpers: percentiles, latency summaries, ratios, /proc parsing, broker command counts."""

from __future__ import annotations

from bench.measure import (
    broker_command_counts,
    busy_cores,
    latency_summary_ms,
    parse_proc_stat,
    parse_proc_status_kib,
    percentile,
    ratio,
)

# proc(5) layout: pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
# cmajflt utime stime cutime cstime priority ...; comm may contain spaces and parentheses.
STAT_LINE = "4242 (celery (worker) 1) S 4200 4242 4242 0 -1 4194560 9 0 0 0 150 25 7 3 20 0 9 0 1 2 3"


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..10 is 5, p95 is 10, and an empty sample gives 0.0."""
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.50) == 5.0
    assert percentile(values, 0.95) == 10.0
    assert percentile([], 0.95) == 0.0


def test_latency_summary_sorts_its_samples() -> None:
    """Unsorted samples give count, mean, p50, p95 and max of the sorted values."""
    summary = latency_summary_ms([30.0, 10.0, 20.0])
    assert summary == {"count": 3, "mean": 20.0, "p50": 20.0, "p95": 30.0, "max": 30.0}


def test_latency_summary_of_no_samples_is_all_zero() -> None:
    """A scenario that completed nothing reports zeros instead of failing."""
    assert latency_summary_ms([]) == {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}


def test_ratio_is_none_when_a_side_is_unknown_or_the_denominator_is_zero() -> None:
    """Ratios never divide by zero and carry 'unknown' through."""
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, None) is None


def test_busy_cores_is_cpu_per_request_times_rate() -> None:
    """8 ms of CPU per request at 100 requests/s keeps 0.8 of a core busy."""
    assert busy_cores(8.0, 100.0) == 0.8
    assert busy_cores(None, 100.0) is None


def test_proc_stat_parser_reads_ppid_and_cpu_ticks_past_a_tricky_command_name() -> None:
    """Parentheses and spaces in the command name do not shift the fields."""
    stat = parse_proc_stat(STAT_LINE)
    assert stat.ppid == 4200
    assert stat.cpu_ticks == 150 + 25
    assert stat.reaped_children_ticks == 7 + 3


STATUS_TEXT = """Name:\tcelery
VmPeak:\t  912345 kB
VmHWM:\t  101234 kB
VmRSS:\t   99876 kB
Threads:\t12
"""


def test_proc_status_parser_reads_rss_and_its_peak_in_kib() -> None:
    """VmRSS and VmHWM come out as KiB integers; other lines are ignored."""
    assert parse_proc_status_kib(STATUS_TEXT) == {"VmRSS": 99876, "VmHWM": 101234}
    assert parse_proc_status_kib("VmRSS:\tgarbage\n") == {}


def test_broker_command_counts_keep_the_calls_of_each_command() -> None:
    """redis-py's parsed INFO commandstats becomes command -> calls; anything else is skipped."""
    stats = {"cmdstat_lpush": {"calls": 7, "usec": 30}, "cmdstat_zadd": {"calls": 2}, "other": 1}
    assert broker_command_counts(stats) == {"lpush": 7, "zadd": 2}
