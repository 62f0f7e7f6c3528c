"""Parking never lets Celery delete a message: any failure before the park is recorded puts it back."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Reject, Retry

from tasks.park import park_keeping_message
from worker.usecase.plan import Park

PARK = Park({"site_code": "PS1", "package_id": "PS100001"}, "PS1", "req-1", 1, 3)


class _Request:
    id = "task-1"


class _Task:
    """Task.retry as Celery behaves: Retry after a publish, Reject(requeue=False) when the publish failed."""

    request = _Request()

    def __init__(self, publish_fails: bool) -> None:
        self._publish_fails = publish_fails

    def retry(self, **_: Any) -> None:
        if self._publish_fails:
            raise Reject("OOM command not allowed", requeue=False)
        raise Retry("Retry in 0s")


class _Slots:
    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.parked: list[tuple[str, str]] = []

    def park(self, site_code: str, holder_id: str, limit: int, *, priority: int, wake: str) -> None:
        if self.fails:
            raise ConnectionError("redis away")
        self.parked.append((holder_id, wake))


def test_a_recorded_park_lets_celery_ack_the_message_as_a_retry() -> None:
    slots = _Slots(fails=False)
    with pytest.raises(Retry):
        park_keeping_message(_Task(publish_fails=False), PARK, slots=slots, push=False)  # type: ignore[arg-type]
    assert [holder for holder, _ in slots.parked] == ["req-1"]


@pytest.mark.parametrize(("publish_fails", "park_fails"), [(True, False), (False, True)])
def test_a_failure_before_the_park_is_recorded_puts_the_message_back(publish_fails: bool, park_fails: bool) -> None:
    """Celery's Reject(requeue=False) would delete the message on Redis: it becomes requeue=True."""
    slots = _Slots(fails=park_fails)
    with pytest.raises(Reject) as rejected:
        park_keeping_message(_Task(publish_fails), PARK, slots=slots, push=False)  # type: ignore[arg-type]
    assert rejected.value.requeue is True and slots.parked == []
