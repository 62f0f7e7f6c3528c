"""Redistribution while following to every DP: RefreshNow on the DPs a poll found failed (opt-in).

    redistributor = Redistributor(client, marks, gate, request, policy=..., deadline=...)
    sent = redistributor(step, rows, now)      # worker/usecase/follow.py's poll calls it after assess

Which DPs are due is worker/domain/redistribution.py's decision. For each, under a provider slot of
its own: the site-wide marker (`RedistributionMarks.claim`, a Redis SET NX PX per package and DP for
`redistribute_window_s`) is taken first, so two workers following the same package never both
send it, then the Put of `RefreshNow = true` (`SccmClient.refresh_now`, never retried in the
call). A DP whose marker another request or worker holds is left alone (it was redistributed in
the window). A Put the provider refuses is reported in the outcome (its error's kind and
message) and not retried within the window: a timed-out Put may have landed, and each landing
re-sends content. No free slot: the rest wait for the next poll.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from config.settings import FollowSettings
from errors import RefreshError
from worker.domain.deadline import Deadline
from worker.domain.distribution import DpStatusRow
from worker.domain.follow import FollowStep, Redistribution
from worker.domain.redistribution import due_for_redistribution
from worker.domain.request import RefreshRequest
from worker.usecase.attempt import OperationGate

__all__ = ["RedistributeClient", "RedistributionMarks", "Redistributor"]

log = logging.getLogger(__name__)


@runtime_checkable
class RedistributeClient(Protocol):
    """The provider client's Put of RefreshNow (`worker.provider.client.SccmClient.refresh_now`)."""

    def refresh_now(
        self, package_id: str, nal_path: str, *, dp_site_code: str | None = None, deadline: Deadline | None = None
    ) -> None: ...


class RedistributionMarks(Protocol):
    """worker.stores.redistribution_marks.RedisRedistributionMarks: one RefreshNow per package and DP per window."""

    def claim(self, site_code: str, package_id: str, nal_path: str, *, window_s: float) -> bool:
        """True for the one caller that may send it now; False while the window of an earlier one lasts."""
        ...


class _Taken:
    """Another request or worker redistributed this DP within the window."""


_TAKEN = _Taken()


class Redistributor:
    """Sends RefreshNow to the DPs a poll's step makes due (see the module)."""

    def __init__(
        self,
        client: RedistributeClient,
        marks: RedistributionMarks,
        gate: OperationGate,
        request: RefreshRequest,
        *,
        policy: FollowSettings,
        deadline: Deadline | None = None,
    ) -> None:
        self._client = client
        self._marks = marks
        self._gate = gate
        self._request = request
        self._policy = policy
        self._deadline = deadline

    def __call__(self, step: FollowStep, rows: Sequence[DpStatusRow], now: float) -> tuple[Redistribution, ...]:
        """RefreshNow for each due DP this worker may send it to; what was sent or refused."""
        dp_sites = {row.nal_path: row.site_code for row in rows}
        sent: list[Redistribution] = []
        for due in due_for_redistribution(step, now=now, policy=self._policy):
            result = self._gate.run(functools.partial(self._send, due.nal_path, dp_sites.get(due.nal_path), now))
            if result is None:
                break  # no slot free now: the next poll
            if isinstance(result, Redistribution):
                sent.append(result)
        return tuple(sent)

    def _send(self, nal_path: str, dp_site: str | None, now: float) -> Redistribution | _Taken:
        request = self._request
        window_s = self._policy.redistribute_window_s
        if not self._marks.claim(request.site_code, request.package_id, nal_path, window_s=window_s):
            log.info(
                "%s/%s: RefreshNow to %s already sent within the window (by another request or worker)",
                request.site_code,
                request.package_id,
                nal_path,
            )
            return _TAKEN
        try:
            self._client.refresh_now(request.package_id, nal_path, dp_site_code=dp_site, deadline=self._deadline)
        except RefreshError as exc:
            log.warning(
                "%s/%s: RefreshNow on %s refused (%s): %s; not retried within the window",
                request.site_code,
                request.package_id,
                nal_path,
                exc.kind,
                exc.message,
            )
            return Redistribution.refused(nal_path, now, exc.kind, exc.message)
        log.info("%s/%s: RefreshNow sent to %s", request.site_code, request.package_id, nal_path)
        return Redistribution(nal_path, now)
