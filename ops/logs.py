"""Log format: plain text by default, one JSON object per line with `SCCM_REFRESH_LOG_FORMAT=json`.

A JSON line always has `time` (UTC, ISO-8601 with milliseconds), `level`, `logger`, `message`;
and, when known, the request it is about: `request_id`, `correlation_id` (the bulk id), `site`,
`package_id`, `attempt`, `kind` (an error kind). Those come from the record's `extra=` first,
then from the Celery task the logging thread is running (its kwargs: only these named fields,
strings and small integers, never anything else a message carries). An exception adds `exc_type`
and `traceback`, exactly what the plain format would print.

The worker process picks the format up through Celery's logging signals (this module is one of
the worker's task modules, imported before Celery sets logging up); other commands call
`configure_logging()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import celery.apps.worker as celery_worker_app
from celery import current_task
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init

__all__ = [
    "LOG_FORMAT_ENV",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "context_fields",
    "log_format_from_env",
    "use_json_formatter",
]

LOG_FORMAT_ENV: Final = "SCCM_REFRESH_LOG_FORMAT"
LogFormat = Literal["text", "json"]
PLAIN_FORMAT: Final = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"

# Record attribute (extra=) or task kwarg -> JSON field.
_CONTEXT_FIELDS: Final = (
    ("request_id", "request_id"),
    ("correlation_id", "correlation_id"),
    ("site", "site"),
    ("site_code", "site"),
    ("package_id", "package_id"),
    ("attempt", "attempt"),
    ("kind", "kind"),
)
_MAX_FIELD_CHARS: Final = 128
_MAX_ATTEMPT: Final = 1_000_000


def log_format_from_env(environ: Mapping[str, str] | None = None) -> LogFormat:
    """`json` or `text` from SCCM_REFRESH_LOG_FORMAT (unset: text); anything else is a ValueError."""
    value = (os.environ if environ is None else environ).get(LOG_FORMAT_ENV, "text").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ValueError(f"{LOG_FORMAT_ENV} must be 'text' or 'json', not {value[:20]!r}")
    return "json" if value == "json" else "text"


def _short_text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value[:_MAX_FIELD_CHARS]
    return None


def _attempt_from(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ATTEMPT:
        return value
    return None


def _task_fields() -> dict[str, Any]:
    """Context of the Celery task this thread runs (thread-local in Celery), if any."""
    task = current_task._get_current_object()  # the proxy itself is never None
    if task is None:
        return {}
    request = task.request
    kwargs = request.kwargs if isinstance(request.kwargs, dict) else {}
    fields: dict[str, Any] = {}
    request_id = _short_text(kwargs.get("request_id")) or _short_text(request.id)
    if request_id:
        fields["request_id"] = request_id
    for kwarg, name in (("correlation_id", "correlation_id"), ("site_code", "site"), ("package_id", "package_id")):
        text = _short_text(kwargs.get(kwarg))
        if text:
            fields[name] = text
    retry_state = kwargs.get("retry_state")
    done = retry_state.get("attempts") if isinstance(retry_state, dict) else 0
    attempt = _attempt_from((done if isinstance(done, int) else 0) + 1)
    if attempt is not None:
        fields["attempt"] = attempt
    return fields


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request fields known for a record: its `extra=` first, then the running task."""
    fields = _task_fields()
    for attribute, name in _CONTEXT_FIELDS:
        value = getattr(record, attribute, None)
        if name == "attempt":
            attempt = _attempt_from(value)
            if attempt is not None:
                fields[name] = attempt
        elif (text := _short_text(value)) is not None:
            fields[name] = text
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside a message are escaped by JSON itself)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(context_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json_formatter(logger: logging.Logger) -> None:
    """Give every handler of `logger` the JSON formatter (Celery has just attached them)."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def configure_logging(level: str | int = "INFO", log_format: LogFormat | None = None) -> LogFormat:
    """Root logging on stderr in the chosen format (default: from the environment)."""
    chosen = log_format or log_format_from_env()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    return chosen


EXIT_CONFIG: Final = 78  # sysexits EX_CONFIG, as for invalid settings


def _on_logger_setup(logger: logging.Logger | None = None, **_: object) -> None:
    try:
        chosen = log_format_from_env()
    except ValueError as exc:
        print(f"sccm-refresh: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if logger is not None and chosen == "json":
        use_json_formatter(logger)


def _say_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's `safe_say` (shutdown notices, from a signal handler), as one JSON line.

    Same means as Celery's: one os.write of a ready-made line, no logging locks.
    """
    line = JsonFormatter().format(logging.LogRecord("celery.apps.worker", logging.WARNING, "", 0, msg, (), None))
    # As Celery's: a lost notice must never abort a shutdown.
    with contextlib.suppress(OSError, AttributeError, ValueError):
        os.write(f.fileno(), (line + "\n").encode())


def _on_worker_init(instance: Any = None, **_: object) -> None:
    """In JSON mode, nothing the worker prints may break one-object-per-line."""
    if instance is None or log_format_from_env() != "json":
        return
    instance.quiet = True  # the start-up banner: many plain lines (its facts are in later log lines)
    celery_worker_app.safe_say = _say_json
    logging.captureWarnings(True)  # Python warnings as log records, not raw stderr text


# Celery attaches its handlers (stderr or --logfile) and then sends these: swap the formatter only.
after_setup_logger.connect(_on_logger_setup, weak=False)
after_setup_task_logger.connect(_on_logger_setup, weak=False)
# Sent by the worker before it sets logging up, with the worker instance.
celeryd_init.connect(_on_worker_init, weak=False)
