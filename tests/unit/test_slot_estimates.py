"""The retry-after estimate of a waiting request (worker.stores.slots.estimate_retry_after_s), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.stores.slots import estimate_retry_after_s


def estimate(rank: int, *, in_use: int = 3, limit: int = 3, hold_s: float = 30.0) -> float:
    return estimate_retry_after_s(rank=rank, in_use=in_use, limit=limit, hold_s=hold_s, min_s=1.0, max_s=600.0)


def test_the_next_in_line_waits_for_about_one_release() -> None:
    """With every slot busy, a slot frees every hold/limit seconds on average: that is rank 0's wait."""
    assert estimate(0) == pytest.approx(10.0)


def test_each_waiter_ahead_adds_one_release() -> None:
    """Rank r needs r + 1 releases."""
    assert [estimate(r) for r in range(4)] == pytest.approx([10.0, 20.0, 30.0, 40.0])


def test_free_slots_held_for_earlier_waiters_count_as_releases_already_made() -> None:
    """With one slot free, rank 1 needs one more release; rank 0 (who just missed its poll) polls soon."""
    assert estimate(1, in_use=2) == pytest.approx(10.0)
    assert estimate(0, in_use=2) == pytest.approx(10.0)


def test_a_limit_lowered_below_the_holders_adds_the_excess() -> None:
    """Four holders on a limit of 2: the first waiter needs three releases."""
    assert estimate(0, in_use=4, limit=2, hold_s=20.0) == pytest.approx(30.0)


def test_the_estimate_is_clamped() -> None:
    """Very short holds still wait the minimum; very long lines wait at most the maximum."""
    assert estimate(0, hold_s=0.001) == 1.0
    assert estimate(10_000) == 600.0


@given(
    rank=st.integers(0, 10_000),
    in_use=st.integers(0, 300),
    limit=st.integers(1, 256),
    hold_s=st.floats(0.001, 86_400),
)
def test_the_estimate_never_shrinks_as_rank_grows(rank: int, in_use: int, limit: int, hold_s: float) -> None:
    """Further back in the line never means polling sooner, and the result stays in bounds."""
    here = estimate(rank, in_use=in_use, limit=limit, hold_s=hold_s)
    behind = estimate(rank + 1, in_use=in_use, limit=limit, hold_s=hold_s)
    assert 1.0 <= here <= behind <= 600.0


def test_releases_seen_further_apart_than_holds_suggest_set_the_pace() -> None:
    """Holds of 30 ms on 3 slots would free one every 10 ms; releases 100 ms apart mean 100 ms per turn."""

    def paced(gap_s: float | None) -> float:
        return estimate_retry_after_s(
            rank=9, in_use=3, limit=3, hold_s=0.03, min_s=0.01, max_s=600.0, release_gap_s=gap_s
        )

    assert paced(0.1) == pytest.approx(1.0)
    assert paced(None) == pytest.approx(0.1)


def test_releases_closer_together_than_holds_suggest_do_not_shorten_the_wait() -> None:
    estimate = estimate_retry_after_s(rank=0, in_use=3, limit=3, hold_s=30.0, min_s=1.0, max_s=600.0, release_gap_s=0.5)
    assert estimate == pytest.approx(10.0)
