"""Unit tests of emulator.faultplan: seeded, repeatable latency and fault decisions."""

from __future__ import annotations

import pytest

from emulator.fault_injection import MAX_LATENCY_S, MAX_QUEUED_FAULTS, FaultPlan
from emulator.settings import EmulatorSettings, FaultRates


def _kinds(plan: FaultPlan, count: int) -> list[str | None]:
    return [plan.decide().kind for _ in range(count)]


def test_same_seed_gives_the_same_fault_sequence() -> None:
    """Two plans with one seed and one set of rates decide identically."""
    rates = {"http_503": 0.2, "timeout_fault": 0.1, "connection_reset": 0.1}
    first = FaultPlan(seed=42, rates=rates, latency_s=0.05, latency_distribution="exponential")
    second = FaultPlan(seed=42, rates=rates, latency_s=0.05, latency_distribution="exponential")
    assert [first.decide() for _ in range(200)] == [second.decide() for _ in range(200)]


def test_rates_are_honoured_roughly() -> None:
    """A 30% rate injects about 30% of the time over many draws."""
    plan = FaultPlan(seed=3, rates={"generic_failure": 0.3})
    kinds = _kinds(plan, 5000)
    assert 0.27 < kinds.count("generic_failure") / len(kinds) < 0.33
    assert set(kinds) == {"generic_failure", None}


def test_no_rates_means_no_faults_and_no_latency() -> None:
    """The default plan answers every operation at once."""
    plan = FaultPlan()
    assert {(d.kind, d.delay_s) for d in (plan.decide() for _ in range(100))} == {(None, 0.0)}


def test_inject_next_takes_precedence_and_runs_out() -> None:
    """Queued faults come first, in order, then decisions fall back to the rates."""
    plan = FaultPlan(seed=1)
    plan.inject_next("http_503", count=2)
    plan.inject_next("quota_fault")
    assert _kinds(plan, 4) == ["http_503", "http_503", "quota_fault", None]


def test_queued_faults_do_not_shift_the_random_sequence() -> None:
    """Every decision draws the same values, so a queued fault does not change later random ones."""
    rates = {"http_503": 0.5}
    plain = FaultPlan(seed=9, rates=rates)
    queued = FaultPlan(seed=9, rates=rates)
    queued.inject_next("connection_reset")
    assert _kinds(plain, 50)[1:] == _kinds(queued, 50)[1:]


def test_fixed_uniform_and_exponential_latency_have_the_configured_mean() -> None:
    """Each distribution averages close to the mean latency; exponential is capped at 10x."""
    for distribution in ("fixed", "uniform", "exponential"):
        plan = FaultPlan(seed=5, latency_s=0.1, latency_distribution=distribution)
        delays = [plan.decide().delay_s for _ in range(4000)]
        assert abs(sum(delays) / len(delays) - 0.1) < 0.01, distribution
        assert max(delays) <= 1.0


def test_clear_drops_rates_queue_and_latency() -> None:
    """clear() returns the plan to answering immediately without faults."""
    plan = FaultPlan(rates={"http_503": 1.0}, latency_s=0.5)
    plan.inject_next("timeout_fault", count=3)
    plan.clear()
    assert plan.decide().kind is None
    assert plan.snapshot()["latency_ms"] == 0.0


def test_invalid_rates_kinds_and_counts_are_rejected() -> None:
    """Unknown kinds, rates outside [0, 1], sums above 1 and bad counts raise ValueError."""
    plan = FaultPlan()
    with pytest.raises(ValueError, match="unknown fault kind"):
        plan.set_rates({"disk_full": 0.1})
    with pytest.raises(ValueError, match="between 0 and 1"):
        plan.set_rates({"http_503": 1.5})
    with pytest.raises(ValueError, match="add up"):
        plan.set_rates({"http_503": 0.6, "timeout_fault": 0.6})
    with pytest.raises(ValueError, match="count"):
        plan.inject_next("http_503", count=0)
    with pytest.raises(ValueError, match="latency"):
        plan.set_latency(-1.0)


def test_from_settings_uses_seed_rates_and_latency() -> None:
    """The plan built from settings matches one built from the same values."""
    settings = EmulatorSettings(
        seed=11, fault_rates=FaultRates(timeout_fault=0.25), latency_s=0.02, latency_distribution="uniform"
    )
    expected = FaultPlan(seed=11, rates={"timeout_fault": 0.25}, latency_s=0.02, latency_distribution="uniform")
    assert [FaultPlan.from_settings(settings).decide() for _ in range(1)] == [expected.decide()]
    snapshot = FaultPlan.from_settings(settings).snapshot()
    assert snapshot["rates"]["timeout_fault"] == 0.25
    assert snapshot["latency_distribution"] == "uniform"


@pytest.mark.parametrize("latency_s", [MAX_LATENCY_S + 0.001, 1e300, float("inf"), float("nan")])
def test_latency_above_the_cap_is_rejected(latency_s: float) -> None:
    """Latency is capped at MAX_LATENCY_S (60 s): larger, infinite or NaN values raise ValueError."""
    with pytest.raises(ValueError, match="latency"):
        FaultPlan(latency_s=latency_s)
    with pytest.raises(ValueError, match="latency"):
        FaultPlan().set_latency(latency_s)
    with pytest.raises(ValueError, match="latency"):
        FaultPlan.from_settings(EmulatorSettings(latency_s=latency_s))
    assert FaultPlan(latency_s=MAX_LATENCY_S).decide().delay_s == MAX_LATENCY_S


def test_queued_faults_are_capped_in_total() -> None:
    """inject_next refuses to grow the queue past MAX_QUEUED_FAULTS, across calls, and queues nothing then."""
    plan = FaultPlan()
    plan.inject_next("http_503", count=MAX_QUEUED_FAULTS - 1)
    with pytest.raises(ValueError, match=str(MAX_QUEUED_FAULTS)):
        plan.inject_next("timeout_fault", count=2)
    plan.inject_next("timeout_fault")
    assert len(plan.snapshot()["next"]) == MAX_QUEUED_FAULTS


def test_a_lost_invoke_is_armed_per_package_and_runs_out() -> None:
    """lose_invoke_while_pending arms that package only (any case), `count` times, and clear() disarms."""
    plan = FaultPlan()
    assert not plan.loses_invokes()
    plan.lose_invoke_while_pending("ps100001", count=2)
    assert plan.loses_invokes() and not plan.take_lost_invoke("PS100002")
    assert [plan.take_lost_invoke("PS100001") for _ in range(3)] == [True, True, False]
    assert plan.snapshot()["lost_invokes_while_pending"] == 2 and not plan.loses_invokes()
    plan.lose_invoke_while_pending("PS100003")
    plan.clear()
    assert not plan.take_lost_invoke("PS100003")


def test_lost_invokes_refuse_a_bad_count_or_too_many() -> None:
    """A count below 1, an empty package id or more than MAX_QUEUED_FAULTS armed is a ValueError."""
    plan = FaultPlan()
    with pytest.raises(ValueError, match="count"):
        plan.lose_invoke_while_pending("PS100001", count=0)
    with pytest.raises(ValueError, match="package_id"):
        plan.lose_invoke_while_pending("")
    plan.lose_invoke_while_pending("PS100001", count=MAX_QUEUED_FAULTS)
    with pytest.raises(ValueError, match="at most"):
        plan.lose_invoke_while_pending("PS100002")
