"""The provider's call log (emulator.calllog): totals, per-package counts, bounded events."""

from __future__ import annotations

import pytest

from emulator.sms.calllog import MAX_EVENTS_PER_PACKAGE, MAX_EVENTS_TOTAL, CallLog


@pytest.mark.parametrize(("packages", "kept"), [(50, MAX_EVENTS_PER_PACKAGE), (10_000, 20), (20_000, 10), (10**6, 10)])
def test_events_per_package_shrink_so_a_big_catalogue_stays_bounded(packages: int, kept: int) -> None:
    """Each package keeps its latest events; a big catalogue keeps fewer per package (at least 10)."""
    log = CallLog(wall_clock=lambda: 0.0, package_count=packages)
    assert log.events_per_package == kept
    assert kept * min(packages, MAX_EVENTS_TOTAL // 10) <= MAX_EVENTS_TOTAL
    for index in range(kept + 5):
        log.record("PS100001", "get", "u", f"ok{index}")
    events = log.snapshot()["packages"]["PS100001"]["events"]
    assert len(events) == kept
    assert events[-1]["result"] == f"ok{kept + 4}"


def test_totals_count_invokes_accepted_and_rejected_apart_from_the_packages() -> None:
    """totals() holds every TOTAL_KEYS counter; invokes record accepted or rejected per package too."""
    log = CallLog(wall_clock=lambda: 1.0)
    log.count("invokes")
    log.record("PS100001", "invoke", "u", "accepted", accepted=True)
    log.count("invokes")
    log.record("PS100001", "invoke", "u", "medium_not_ready:21")
    totals = log.totals()
    assert (totals["invokes"], totals["accepted"], totals["rejected"], totals["gets"]) == (2, 1, 1, 0)
    package = log.snapshot()["packages"]["PS100001"]
    assert (package["invokes"], package["accepted"], package["rejected"]) == (2, 1, 1)
    log.reset()
    assert log.snapshot() == {"packages": {}, "totals": dict.fromkeys(totals, 0)}
