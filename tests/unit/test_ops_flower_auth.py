"""ops/flower_app.py: credential files, the loopback rule, and custom states that outlive a re-queue."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ops.flower_app import StickyStatesEventsState
from ops.flower_config import BASIC_AUTH_FILE_ENV, FlowerConfigError, is_loopback, load_credentials, resolve_credentials
from worker.task_states import JOINED, WAITING_FOR_MEDIUM, is_custom_state, state_event_type


def test_credentials_file_lines_are_read_comments_and_blanks_skipped(tmp_path: Path) -> None:
    """user:password lines (a colon inside the password is kept); # comments and blank lines are ignored."""
    path = tmp_path / "auth"
    path.write_text("# ops team\n\nadmin:pa:ss\r\nviewer:secret\n", encoding="utf-8")
    assert load_credentials(path) == ("admin:pa:ss", "viewer:secret")


@pytest.mark.parametrize("content", ["", "# only a comment\n", "no-colon-Secret99\n", ":nouser\n", "nopass:\n"])
def test_unusable_credentials_files_are_refused_without_echoing_them(tmp_path: Path, content: str) -> None:
    """Empty, comment-only or malformed files are refused; the message names the line, never its text."""
    path = tmp_path / "auth"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FlowerConfigError) as caught:
        load_credentials(path)
    assert "Secret99" not in str(caught.value) and "nouser" not in str(caught.value)


def test_a_missing_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    """The path is named with the OS reason."""
    with pytest.raises(FlowerConfigError, match="cannot read basic-auth file"):
        load_credentials(tmp_path / "absent")


def test_loopback_addresses() -> None:
    """127/8, ::1 and localhost are loopback; every-interface and routable addresses are not."""
    assert all(is_loopback(a) for a in ("127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"))
    assert not any(is_loopback(a) for a in ("", "0.0.0.0", "::", "10.1.2.3", "flower.example"))  # noqa: S104 - test data


def test_credentials_are_required_unless_running_without_auth_on_loopback(tmp_path: Path) -> None:
    """No file: refused; --insecure-no-auth: only on loopback; the env variable names the file too."""
    with pytest.raises(FlowerConfigError, match="needs credentials"):
        resolve_credentials(basic_auth_file=None, insecure_no_auth=False, address="127.0.0.1", environ={})
    with pytest.raises(FlowerConfigError, match="refused"):
        resolve_credentials(basic_auth_file=None, insecure_no_auth=True, address="0.0.0.0", environ={})  # noqa: S104
    assert resolve_credentials(basic_auth_file=None, insecure_no_auth=True, address="127.0.0.1", environ={}) == ()
    path = tmp_path / "auth"
    path.write_text("a:b\n", encoding="utf-8")
    env = {BASIC_AUTH_FILE_ENV: str(path)}
    assert resolve_credentials(basic_auth_file=None, insecure_no_auth=False, address="0.0.0.0", environ=env) == ("a:b",)  # noqa: S104
    with pytest.raises(FlowerConfigError, match="exclude each other"):
        resolve_credentials(basic_auth_file=path, insecure_no_auth=True, address="127.0.0.1", environ={})


def test_custom_state_names_map_to_task_events_and_celery_states_are_refused() -> None:
    """WAITING_FOR_MEDIUM -> task-waiting_for_medium; Celery's own states and event names are not custom."""
    assert state_event_type(WAITING_FOR_MEDIUM) == "task-waiting_for_medium"
    assert state_event_type(JOINED) == "task-joined"
    for bad in ("SUCCESS", "RETRY", "REJECTED", "RETRIED", "lower", "WITH SPACE", "X"):
        with pytest.raises(ValueError, match="not a custom task state"):
            state_event_type(bad)
    assert is_custom_state(WAITING_FOR_MEDIUM) and not is_custom_state("STARTED") and not is_custom_state(None)


def play(state: StickyStatesEventsState, *events: tuple[str, float, dict[str, Any]]) -> list[str]:
    seen = []
    for event_type, stamp, fields in events:
        event = {"type": event_type, "uuid": "T", "hostname": "w@h", "timestamp": stamp, "local_received": stamp}
        state.event({**event, "clock": 1, **fields})
        seen.append(state.tasks["T"].state)
    return seen


def test_a_custom_state_is_kept_through_the_requeue_and_replaced_when_the_next_run_starts() -> None:
    """sent/received/retried of the re-queue keep WAITING_FOR_MEDIUM; the next task-started and the end replace it."""
    t = time.time()
    states = play(
        StickyStatesEventsState(max_tasks_in_memory=10),
        ("task-received", t, {"name": "sccm.refresh_package"}),
        ("task-started", t + 1, {}),
        ("task-waiting_for_medium", t + 2, {"result": "ReturnValue 21"}),
        ("task-sent", t + 3, {}),
        ("task-received", t + 3.1, {"retries": 1}),
        ("task-retried", t + 3.2, {}),
        ("task-started", t + 30, {}),
        ("task-succeeded", t + 31, {"result": "ok"}),
    )
    assert states == ["RECEIVED", "STARTED", *[WAITING_FOR_MEDIUM] * 4, "STARTED", "SUCCESS"]


def test_an_older_event_arriving_late_never_replaces_a_custom_state() -> None:
    """The worker buffers its own events: a task-started stamped before the custom state arrives after it and loses."""
    t = time.time()
    states = play(
        StickyStatesEventsState(max_tasks_in_memory=10),
        ("task-received", t, {"name": "sccm.refresh_package"}),
        ("task-joined", t + 2, {"result": "joined req-1"}),
        ("task-started", t + 1, {}),
        ("task-succeeded", t + 3, {"result": "ok"}),
    )
    assert states == ["RECEIVED", JOINED, JOINED, "SUCCESS"]
