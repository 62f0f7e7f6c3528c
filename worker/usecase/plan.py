"""What the refresh use case answers: a `Plan` (the outcomes to publish, then the message's fate).

Done                 ack it: the request has its final outcome (in `outcomes`)
Requeue(countdown_s) re-queue it with a countdown; the retry state travels in its kwargs
Park                 put it in the site's line for a provider slot, then ack it: the release
                     that frees a slot sends it back (worker/stores/slots.py)
Drop                 ack it without publishing: a redelivery of a request that already ended
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.domain.outcomes import Outcome

__all__ = ["Done", "Drop", "Park", "Plan", "Requeue", "Then"]


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Requeue:
    countdown_s: float
    kwargs: dict[str, Any]
    # What the request waits for, for monitors (Flower): a custom task state and a one-line detail.
    state: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Park:
    """Wait in `site_code`'s line for a provider slot, holding no thread: the message comes back when woken."""

    kwargs: dict[str, Any]
    site_code: str
    holder_id: str
    priority: int
    limit: int
    state: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Drop:
    reason: str


Then = Done | Requeue | Park | Drop


@dataclass(frozen=True)
class Plan:
    """Outcomes to publish in order, then what becomes of the message."""

    outcomes: tuple[Outcome, ...] = ()
    then: Then = field(default_factory=Done)
    # Identifies a rejected message, so its rejection is recorded once per message.
    message_key: str | None = None
    request_id: str | None = None
    # Set when `outcomes` include the finals of requests that joined this one: once they are
    # published, the leader's hand-over list can be cleared.
    followers_of: str | None = None
    # A dropped redelivery's final outcome, recorded earlier: told again to what follows a final
    # (a bulk counts a child once, so telling twice is harmless; never published again).
    recorded_final: Outcome | None = None
