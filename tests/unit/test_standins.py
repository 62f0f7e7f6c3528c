"""The stand-ins' expiries that the contract tests cannot drive on Redis (its TTLs take no clock).

The coalescing stand-in (testing/standins/coalescer.py) expires as coalesce.lua's keys do: the
leader marker `ttl_s` after its latest claim, its followers with it, the followers to publish
`publish_ttl_s` after the close.
"""

from __future__ import annotations

from testing.standins import MemoryCoalescer
from worker.usecase.values import Joined, Leader

SITE, PACKAGE = "PS1", "PS100001"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_leaders_marker_lapses_ttl_after_its_latest_claim() -> None:
    """Each claim by the leader extends its marker; without one for `ttl_s`, nobody leads."""
    clock = Clock()
    coalescer = MemoryCoalescer(clock)
    coalescer.claim(SITE, PACKAGE, "req-1", {}, ttl_s=100)
    clock.now += 50
    coalescer.claim(SITE, PACKAGE, "req-1", {}, ttl_s=100)
    clock.now += 99
    assert coalescer.current_leader(SITE, PACKAGE) == "req-1"
    clock.now += 1
    assert coalescer.current_leader(SITE, PACKAGE) is None


def test_a_shorter_claim_never_cuts_the_marker_short() -> None:
    """A claim with a shorter TTL than the marker has left keeps the longer one."""
    clock = Clock()
    coalescer = MemoryCoalescer(clock)
    coalescer.claim(SITE, PACKAGE, "req-1", {}, ttl_s=100)
    coalescer.claim(SITE, PACKAGE, "req-1", {}, ttl_s=10)
    clock.now += 99
    assert coalescer.current_leader(SITE, PACKAGE) == "req-1"


def test_followers_vanish_with_their_dead_leader() -> None:
    """Once the marker lapsed, the next claim leads, and the dead leader's followers are not its own."""
    clock = Clock()
    coalescer = MemoryCoalescer(clock)
    coalescer.claim(SITE, PACKAGE, "req-1", {}, ttl_s=100)
    assert coalescer.claim(SITE, PACKAGE, "req-2", {}, ttl_s=100) == Joined("req-1")
    assert coalescer.claim(SITE, PACKAGE, "req-3", {}, ttl_s=100) == Joined("req-1")
    clock.now += 100
    assert coalescer.claim(SITE, PACKAGE, "req-2", {}, ttl_s=100) == Leader("req-2")
    assert coalescer.close(SITE, PACKAGE, "req-2").followers == ()


def test_followers_to_publish_are_kept_for_the_publish_ttl() -> None:
    """A crashed leader's followers stay pending `publish_ttl_s` after its close, then are forgotten."""
    clock = Clock()
    coalescer = MemoryCoalescer(clock, publish_ttl_s=60)
    coalescer.claim(SITE, PACKAGE, "req-1", {}, ttl_s=100)
    coalescer.claim(SITE, PACKAGE, "req-2", {}, ttl_s=100)
    coalescer.close(SITE, PACKAGE, "req-1")
    clock.now += 59
    assert [f.request_id for f in coalescer.pending_followers("req-1")] == ["req-2"]
    clock.now += 1
    assert coalescer.pending_followers("req-1") == ()
