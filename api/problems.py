"""Error responses: one JSON shape per kind, no echo of what the caller sent, no traceback.

* 422 `{"detail": [{"loc", "msg", "type"}]}`: FastAPI's validation format without `input` and
  `ctx`; an unknown key that is not a plain name is shown as `<key>`, and a message that quotes
  the value sent has it replaced by `<value>`. At most `MAX_FIELD_ERRORS` entries.
* every other error `{"detail": "...", "error_id": null}`; a 500 gets an `error_id` that is also
  in the server log (with the exception's type only: its text may hold request data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.domain.packages import safe_repr

__all__ = [
    "EXCEPTION_HANDLERS",
    "MAX_FIELD_ERRORS",
    "RETRY_AFTER_FULL",
    "ApiError",
    "FieldValidationError",
    "field_error",
    "problem_response",
    "sanitise_errors",
    "validation_response",
]

MAX_FIELD_ERRORS: Final = 20
# A full Redis (maxmemory) frees memory as entries expire or an operator makes room: not in a second or two.
RETRY_AFTER_FULL: Final = {"Retry-After": "5"}
HTTP_BODY_UNREADABLE: Final = 400
_SHOWN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_HIDDEN_KEY: Final = "<key>"
_HIDDEN_VALUE: Final = "<value>"


class ApiError(HTTPException):
    """An HTTP error with our body; `headers` as for HTTPException."""

    def __init__(self, status_code: int, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=dict(headers) if headers else None)


class FieldValidationError(Exception):
    """A 422 raised by a route after the framework's own validation (same body shape)."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        super().__init__("invalid request")
        self.errors = list(errors)


def field_error(loc: Sequence[str | int], msg: str, type_: str = "value_error") -> FieldValidationError:
    return FieldValidationError([{"loc": tuple(loc), "msg": msg, "type": type_}])


def sanitise_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors as the API shows them (see the module docstring)."""
    shown = [_sanitise(err) for err in errors[:MAX_FIELD_ERRORS]]
    if len(errors) > MAX_FIELD_ERRORS:
        shown.append(
            {"loc": ["body"], "msg": f"and {len(errors) - MAX_FIELD_ERRORS} more errors", "type": "too_many_errors"}
        )
    return shown


def _sanitise(err: Mapping[str, Any]) -> dict[str, Any]:
    loc = [_shown_loc(part) for part in err.get("loc", ())]
    type_ = str(err.get("type", "value_error"))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if type_ == "extra_forbidden":
        msg = "unknown field"
    elif "input" in err:
        msg = _without_value(msg, err["input"])
    return {"loc": loc, "msg": msg, "type": type_}


def _shown_loc(part: object) -> str | int:
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    if isinstance(part, str) and _SHOWN_KEY.fullmatch(part):
        return part
    return _HIDDEN_KEY


def _without_value(msg: str, value: object) -> str:
    # Our validators quote a short repr of a bad value; the API does not send it back. A list's
    # validator quotes the bad item.
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, int | float):
            # A number stands alone (not a digit of another number in the rule's text).
            msg = re.sub(rf"(?<![\w.-]){re.escape(repr(item))}(?![\w.])", _HIDDEN_VALUE, msg)
        elif isinstance(item, str):
            for shown in {safe_repr(item), repr(item)}:
                if len(shown) > 2:
                    msg = msg.replace(shown, _HIDDEN_VALUE)
    return msg


def validation_response(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": sanitise_errors(errors)}, status_code=422)


def problem_response(
    status_code: int, detail: str, *, error_id: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "error_id": error_id}, status_code=status_code, headers=headers)


async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


async def on_field_errors(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FieldValidationError)
    return validation_response(exc.errors)


async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == HTTP_BODY_UNREADABLE:
        # FastAPI's one 400: a JSON body it could not decode (not UTF-8). Same answer as any
        # other body that is not JSON.
        return validation_response(
            [{"loc": ("body",), "msg": "the body is not UTF-8 JSON text", "type": "json_invalid"}]
        )
    detail = exc.detail if isinstance(exc.detail, str) else "error"
    return problem_response(exc.status_code, detail, headers=exc.headers)


EXCEPTION_HANDLERS: Final = {
    RequestValidationError: on_validation_error,
    FieldValidationError: on_field_errors,
    StarletteHTTPException: on_http_error,
}
