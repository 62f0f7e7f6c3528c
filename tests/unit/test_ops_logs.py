"""ops/logs.py: the JSON line format, the request fields it adds, and the format switch."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from ops.logs import JsonFormatter, context_fields, log_format_from_env


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("worker.delivery", logging.INFO, __file__, 1, message, args or ("world",), None)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def test_a_json_line_has_time_level_logger_and_the_formatted_message() -> None:
    """One object per line: UTC time with milliseconds, level, logger name, the message with its args."""
    line = JsonFormatter().format(record())
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "INFO" and entry["logger"] == "worker.delivery" and entry["message"] == "hello world"
    assert entry["time"].endswith("+00:00") and "." in entry["time"]


def test_request_fields_given_as_extra_are_added_and_sanitised() -> None:
    """request_id, correlation_id, site (or site_code), package_id, attempt, kind come from extra=; junk is dropped."""
    entry = json.loads(
        JsonFormatter().format(
            record(
                request_id="r-1",
                correlation_id="bulk-1",
                site_code="PS1",
                package_id="PS100012",
                attempt=3,
                kind="connect",
            )
        )
    )
    assert {k: entry[k] for k in ("request_id", "correlation_id", "site", "package_id", "attempt", "kind")} == {
        "request_id": "r-1",
        "correlation_id": "bulk-1",
        "site": "PS1",
        "package_id": "PS100012",
        "attempt": 3,
        "kind": "connect",
    }
    odd = context_fields(record(request_id={"not": "text"}, attempt=True, kind="x" * 500))
    assert "request_id" not in odd and "attempt" not in odd and len(odd["kind"]) == 128


def test_a_multiline_message_and_a_traceback_stay_on_one_line() -> None:
    """Newlines are escaped by JSON; an exception adds its type and the traceback text."""
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed:\n%s", ("two\nlines",), sys.exc_info())
    line = JsonFormatter().format(rec)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "failed:\ntwo\nlines" and entry["exc_type"] == "ValueError"
    assert "Traceback" in entry["traceback"]


def test_the_format_switch_defaults_to_text_and_refuses_unknown_values() -> None:
    """Unset or empty means text; json and JSON mean json; anything else is a clear ValueError."""
    assert log_format_from_env({}) == "text"
    assert log_format_from_env({"SCCM_REFRESH_LOG_FORMAT": ""}) == "text"
    assert log_format_from_env({"SCCM_REFRESH_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ValueError, match="must be 'text' or 'json'"):
        log_format_from_env({"SCCM_REFRESH_LOG_FORMAT": "xml"})
