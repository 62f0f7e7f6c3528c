"""The concurrency high-water mark (emulator.concurrency.ConcurrencyMeter)."""

from __future__ import annotations

from contextlib import ExitStack

from emulator.concurrency import ConcurrencyMeter


def test_peaks_are_kept_per_user_case_insensitively_and_in_total() -> None:
    """Three of one user and one of another at once: peaks 3, 1 and 4, after they all ended."""
    meter = ConcurrencyMeter(wall_clock=lambda: 0.0)
    with ExitStack() as stack:
        for user in ("LAB\\svc", "lab\\SVC", "LAB\\svc", "LAB\\other"):
            stack.enter_context(meter.track(user))
        assert meter.snapshot()["total"] == {"current": 4, "peak": 4}
    with meter.track("LAB\\svc"):
        pass
    assert (meter.peak("lab\\svc"), meter.peak("LAB\\OTHER"), meter.peak()) == (3, 1, 4)
    snapshot = meter.snapshot()
    assert snapshot["per_user"]["lab\\svc"] == {"current": 0, "peak": 3}
    assert snapshot["operations"] == 5


def test_reset_lowers_the_peaks_to_what_is_in_flight() -> None:
    """After reset the marks start from the operations still running, not from zero."""
    meter = ConcurrencyMeter(wall_clock=lambda: 0.0)
    with meter.track("a"):
        with meter.track("a"), meter.track("b"):
            pass
        meter.reset()
        assert (meter.peak("a"), meter.peak("b"), meter.peak()) == (1, 0, 1)
    assert meter.snapshot()["operations"] == 0
    assert meter.peak("nobody") == 0
