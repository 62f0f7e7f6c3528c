"""The task's last line of defence: an unexpected exception is reported, sanitised, never leaked.

Runs the real task function eagerly (`Task.apply`) with the provider client and the outcome
publisher replaced by recorders: this is the task's own control flow under test, not the wire
(tests/integration cover that).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tasks.refresh as task_module
from config.settings import reset_settings
from worker.errors import InternalError
from worker.outcomes import Outcome

SECRET = "Sommer€2024-Geheim"


class RecordingPublisher:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def publish(self, outcome: Outcome) -> bool:
        self.outcomes.append(outcome)
        return True

    def final_recorded(self, request_id: str) -> bool:
        return any(o.final and o.request_id == request_id for o in self.outcomes)


class ExplodingClient:
    """Fails the way requests does on a non-Latin-1 Basic password: the secret in the exception."""

    def get_package(self, package_class: str, package_id: str) -> Any:
        raise UnicodeEncodeError("latin-1", SECRET, 6, 7, "ordinal not in range(256)")

    def refresh(self, package_class: str, package_id: str) -> int:  # pragma: no cover - never reached
        return 0


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingPublisher]:
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__ENDPOINT", "https://sccm01:5986/wsman")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__USERNAME", "u")
    monkeypatch.setenv("SCCM_REFRESH_PROVIDERS__PS1__PASSWORD", "p")
    reset_settings()
    publisher = RecordingPublisher()
    monkeypatch.setattr(task_module, "publisher", lambda: publisher)
    monkeypatch.setattr(task_module, "client_for", lambda _site: ExplodingClient())
    yield publisher
    reset_settings()


def test_unexpected_exception_becomes_one_internal_final_outcome_without_its_text(
    recorder: RecordingPublisher,
) -> None:
    """The request ends 'failed' (kind internal) and Celery sees a sanitised InternalError."""
    result = task_module.refresh_package.apply(
        kwargs={"site_code": "PS1", "package_id": "PS100001", "request_id": "req-internal-1"}
    )
    assert isinstance(result.result, InternalError)
    assert SECRET not in repr(result.result) and SECRET not in str(result.traceback)
    (final,) = recorder.outcomes
    assert final.final and final.status == "failed" and final.request_id == "req-internal-1"
    assert final.error is not None and final.error["kind"] == "internal"
    assert final.error["message"] == "internal error: UnicodeEncodeError"
    assert SECRET not in final.to_json()


def test_redelivered_request_with_a_final_outcome_is_dropped_without_calling_the_provider(
    recorder: RecordingPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message delivered again after its request ended does nothing (no call, no event)."""
    task_module.refresh_package.apply(kwargs={"site_code": "PS1", "package_id": "PS100001", "request_id": "req-2"})
    calls: list[str] = []
    monkeypatch.setattr(task_module, "client_for", calls.append)
    result = task_module.refresh_package.apply(
        kwargs={"site_code": "PS1", "package_id": "PS100001", "request_id": "req-2"}
    )
    assert result.result == {"request_id": "req-2", "already_final": True}
    assert calls == [] and len(recorder.outcomes) == 1
