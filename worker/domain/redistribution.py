"""Which target DPs a followed request redistributes after a poll (opt-in; pure).

    for row in due_for_redistribution(step, now=..., policy=...):   # after worker/domain/follow.py's assess
        RefreshNow on (package, row.nal_path), if the site-wide marker lets this worker send it

A request followed to every DP with `redistribute_failed` (its own, or its site's) sets
`RefreshNow = true` on the package's `SMS_DistributionPoint` at a target DP that reads

* State 3 (install failed): DistMgr gave up on it; or
* State 2 (install retrying) for at least `redistribute_after_s` (seen retrying by this request
  since then): ConfigMgr would go on retrying for about 50 hours, 30 minutes apart.

A DP this request redistributed less than `redistribute_window_s` ago is not due again, whatever
it reads (the Redis marker makes that hold across requests and workers too:
worker/stores/redistribution_marks.py). Only rows read at V1 are looked at (phase two): before
V1, a failed row is the old version's failure and the refresh will re-send it anyway. At most
`MAX_PER_POLL` DPs per poll, stragglers first: an offline DP shared by a thousand packages costs
each request one Put per window, spread over its polls.
"""

from __future__ import annotations

from typing import Final

from config.settings import FollowSettings
from errors import InvalidRequestError
from worker.domain.distribution import DpState, validate_nal_path
from worker.domain.follow import FollowStep, RowReport

__all__ = ["MAX_PER_POLL", "due_for_redistribution"]

MAX_PER_POLL: Final = 10


def due_for_redistribution(step: FollowStep, *, now: float, policy: FollowSettings) -> tuple[RowReport, ...]:
    """The rows of this poll's step whose DP should get RefreshNow now (see the module)."""
    state = step.state
    if state.v1 is None or state.targets is None:
        return ()
    targets = set(state.targets)
    retrying_since = dict(state.retrying_since)
    last_sent = {entry.nal_path: entry.at for entry in state.redistributed}
    due: list[RowReport] = []
    for row in step.rows:
        if row.nal_path not in targets or not _window_passed(last_sent.get(row.nal_path), now, policy):
            continue
        if row.state == DpState.INSTALL_FAILED or (
            row.state == DpState.INSTALL_RETRYING
            and now - retrying_since.get(row.nal_path, now) >= policy.redistribute_after_s
        ):
            due.append(row)
        if len(due) >= MAX_PER_POLL:
            break
    return tuple(row for row in due if _sendable(row.nal_path))


def _window_passed(sent_at: float | None, now: float, policy: FollowSettings) -> bool:
    """True when the DP may be sent RefreshNow again: never sent by this request, or the window passed."""
    return sent_at is None or now - sent_at >= policy.redistribute_window_s


def _sendable(nal_path: str) -> bool:
    # Rows were checked as they were read; a state carried in a message is checked again here.
    try:
        validate_nal_path(nal_path)
    except InvalidRequestError:
        return False
    return True
