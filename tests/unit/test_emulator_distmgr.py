"""Distribution Manager's queue model (emulator.distmgr) on a fake clock: FIFO, threads, coalescing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.sms.distmgr import DistMgr, Processed


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def make(threads: int = 3, time_per_package_s: float = 10.0) -> tuple[DistMgr, Clock]:
    clock = Clock()
    return DistMgr(threads=threads, time_per_package_s=time_per_package_s, clock=clock), clock


def finished(distmgr: DistMgr) -> list[tuple[str, float]]:
    return [(item.package_id, item.finished_at) for item in distmgr.advance()]


def test_with_no_time_per_package_a_submitted_package_is_processed_at_once() -> None:
    """time_per_package_s = 0: submit, and the package is already processed, at the submit time."""
    distmgr, clock = make(time_per_package_s=0.0)
    assert distmgr.submit("PS100001") is True
    assert not distmgr.busy("PS100001")
    assert finished(distmgr) == [("PS100001", clock.now_s)]


def test_no_more_packages_than_threads_are_processed_at_once_and_the_rest_wait_fifo() -> None:
    """Two threads, four packages of 10 s: two processing then two more, finishing at 10 and 20 s."""
    distmgr, clock = make(threads=2, time_per_package_s=10.0)
    for package_id in ("A", "B", "C", "D"):
        distmgr.submit(package_id)
    snapshot = distmgr.snapshot()
    assert (snapshot["processing"], snapshot["queued"], snapshot["processing_ids"]) == (2, 2, ["A", "B"])
    assert [distmgr.state(p) for p in ("A", "C")] == ["processing", "queued"]
    start = clock.now_s
    clock.now_s += 25.0
    assert finished(distmgr) == [("A", start + 10), ("B", start + 10), ("C", start + 20), ("D", start + 20)]
    assert distmgr.snapshot()["processed"] == 4
    assert not any(distmgr.busy(p) for p in ("A", "B", "C", "D"))


def test_reading_often_or_rarely_gives_the_same_history() -> None:
    """Advancing at every second or once at the end reports the same finishes (lazy replay)."""
    often, often_clock = make(threads=2, time_per_package_s=3.0)
    rarely, rarely_clock = make(threads=2, time_per_package_s=3.0)
    history: list[tuple[str, float]] = []
    for step in range(12):
        for distmgr, clock in ((often, often_clock), (rarely, rarely_clock)):
            clock.now_s = 100.0 + step
            if step % 2 == 0:
                distmgr.submit(f"P{step}")
        history += finished(often)
    often_clock.now_s = rarely_clock.now_s = 200.0
    history += finished(often)
    assert finished(rarely) == history
    assert len(history) == 6


def test_a_refresh_of_a_queued_package_is_coalesced() -> None:
    """While a package waits in the queue, another refresh of it joins that entry: one processing."""
    distmgr, clock = make(threads=1, time_per_package_s=10.0)
    distmgr.submit("A")
    assert distmgr.submit("B") is True
    assert distmgr.submit("B") is False
    clock.now_s += 100.0
    assert [package_id for package_id, _ in finished(distmgr)] == ["A", "B"]
    snapshot = distmgr.snapshot()
    assert (snapshot["accepted"], snapshot["coalesced"], snapshot["processed"]) == (3, 1, 2)


def test_a_refresh_during_processing_queues_again_and_waits_for_it_to_end() -> None:
    """A package being processed queues once more and starts only when that processing ends."""
    distmgr, clock = make(threads=3, time_per_package_s=10.0)
    start = clock.now_s
    distmgr.submit("A")
    clock.now_s += 4.0
    assert distmgr.submit("A") is True
    assert distmgr.state("A") == "processing_and_queued"
    distmgr.submit("B")  # a later package may pass it: two threads are free
    clock.now_s += 100.0
    assert finished(distmgr) == [("A", start + 10), ("B", start + 14), ("A", start + 20)]


def test_a_held_distmgr_starts_nothing_until_released() -> None:
    """Held: queued packages wait however long; released, they start at the release time."""
    distmgr, clock = make(threads=1, time_per_package_s=5.0)
    distmgr.hold()
    distmgr.submit("A")
    clock.now_s += 1000.0
    assert finished(distmgr) == []
    assert distmgr.busy("A")
    assert distmgr.snapshot()["held"] is True
    released_at = clock.now_s
    distmgr.release()
    clock.now_s += 5.0
    assert finished(distmgr) == [("A", released_at + 5.0)]


def test_drain_processes_everything_now_in_order() -> None:
    """drain(): processing packages first, then the queue in FIFO order, all finishing now."""
    distmgr, clock = make(threads=1, time_per_package_s=60.0)
    for package_id in ("A", "B", "C"):
        distmgr.submit(package_id)
    clock.now_s += 1.0
    distmgr.drain()
    assert finished(distmgr) == [("A", clock.now_s), ("B", clock.now_s), ("C", clock.now_s)]
    distmgr.submit("D")  # the thread is free again at once
    assert distmgr.state("D") == "processing"


def test_a_new_time_per_package_applies_to_packages_started_afterwards() -> None:
    """Changing the time per package leaves the processing package's finish time alone."""
    distmgr, clock = make(threads=1, time_per_package_s=10.0)
    start = clock.now_s
    distmgr.submit("A")
    distmgr.submit("B")
    distmgr.set_time_per_package(1.0)
    clock.now_s += 50.0
    assert finished(distmgr) == [("A", start + 10.0), ("B", start + 11.0)]


@pytest.mark.parametrize(("threads", "seconds"), [(0, 1.0), (1, -1.0), (1, float("nan")), (1, float("inf"))])
def test_bad_settings_are_refused(threads: int, seconds: float) -> None:
    """At least one thread and a finite, non-negative time per package."""
    with pytest.raises(ValueError, match=r"thread|time per package"):
        DistMgr(threads=threads, time_per_package_s=seconds, clock=Clock())


@settings(max_examples=60, deadline=None)
@given(
    threads=st.integers(1, 4),
    seconds=st.sampled_from([0.0, 0.5, 3.0]),
    events=st.lists(st.tuples(st.sampled_from("ABCDEF"), st.floats(0.0, 4.0)), max_size=25),
)
def test_every_accepted_refresh_is_processed_once_per_queue_entry_and_never_beyond_threads(
    threads: int, seconds: float, events: list[tuple[str, float]]
) -> None:
    """Whatever the arrivals: processing never exceeds `threads`, a package never runs twice at once,
    and each queue entry (accepted minus coalesced) is processed exactly once."""
    distmgr, clock = make(threads=threads, time_per_package_s=seconds)
    done: list[Processed] = []
    for package_id, gap_s in events:
        clock.now_s += gap_s
        distmgr.submit(package_id)
        snapshot = distmgr.snapshot()
        assert snapshot["processing"] <= threads
        assert len(set(snapshot["processing_ids"])) == snapshot["processing"]
        done += distmgr.advance()
    clock.now_s += 1000.0
    done += distmgr.advance()
    snapshot = distmgr.snapshot()
    assert len(done) == snapshot["processed"] == snapshot["accepted"] - snapshot["coalesced"]
    assert [item.finished_at for item in done] == sorted(item.finished_at for item in done)
    assert (snapshot["queued"], snapshot["processing"]) == (0, 0)
