"""The `distribution` block of an outcome (schema version 3): what following to every DP found.

    block = distribution_block(step, max_rows=..., now=..., policy=...)   # worker/domain/follow.py's step

Readers check it on parse (worker/domain/outcomes.py). The block is JSON-ready (docs/outcomes.md,
"The distribution block"; docs/outcome.schema.json):

    phase            "source": waiting for SourceVersion to pass V0; "dps": following the DP rows
    targets          DPs followed (null until read)
    counts           done / waiting / retrying / failed / unknown / removed
    dps              at most `max_rows` target rows, stragglers first
    dps_omitted      target rows not listed
    following_since  acceptance; deadline_at: when it times out; next_poll_at: null once final
    polls            polls made
    redistributed    only for a request that redistributes (its own `redistribute_failed`, or its
                     site's): the DPs it sent RefreshNow, the latest per DP: dp, nal_path, at,
                     error (null, or the refusal's kind and message)

V0 and V1 are the outcome's `source_version_before` and `source_version_after`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from config.settings import FollowSettings
from worker.domain.distribution import dp_name_from_nal
from worker.domain.follow import FollowStep
from worker.domain.outcomes import format_timestamp

__all__ = ["distribution_block"]


def distribution_block(
    step: FollowStep, *, max_rows: int, now: float, policy: FollowSettings, redistributes: bool = False
) -> dict[str, Any]:
    """The outcome's block for this poll's step (timestamps as the outcome spells them)."""

    def stamp(moment: float) -> str:
        return format_timestamp(datetime.fromtimestamp(moment, UTC))

    state = step.state
    rows = step.rows[:max_rows]
    block = {
        "phase": "dps" if state.v1 is not None and state.targets is not None else "source",
        "targets": len(state.targets) if state.targets is not None else None,
        "counts": dict(step.counts),
        "dps": [row.to_dict() for row in rows],
        "dps_omitted": len(step.rows) - len(rows),
        "following_since": stamp(state.started_at),
        "deadline_at": stamp(state.deadline_at(policy)),
        "next_poll_at": stamp(now + step.next_poll_s) if step.next_poll_s is not None else None,
        "polls": state.polls,
    }
    if redistributes:
        block["redistributed"] = [
            {
                "dp": dp_name_from_nal(entry.nal_path) or "?",
                "nal_path": entry.nal_path,
                "at": stamp(entry.at),
                "error": None if entry.landed else {"kind": entry.error_kind, "message": entry.error_message},
            }
            for entry in state.redistributed
        ]
    return block
