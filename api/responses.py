"""The error responses each route declares in the OpenAPI document (every status it can answer)."""

from __future__ import annotations

from typing import Any, Final

from api.models import Problem, ValidationProblem

__all__ = ["POST_ERRORS", "READ_ERRORS", "error_responses"]

_DESCRIPTIONS: Final = {
    401: "no bearer token, or not a known one (WWW-Authenticate: Bearer)",
    403: "the token's role does not allow this route",
    404: "not found",
    409: "Idempotency-Key reused with another body, or its first request is still running (Retry-After)",
    413: "request body larger than api.max_body_bytes",
    422: "a field broke its rule; each is named, the values sent are not echoed",
    429: "this token holds its share of event streams already (Retry-After)",
    500: "a bug: the error_id is in the server log",
    503: "Redis or the broker is unreachable, or a capacity limit is reached (Retry-After)",
}
READ_ERRORS: Final = (401, 403, 422, 500, 503)
POST_ERRORS: Final = (*READ_ERRORS, 409, 413)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ValidationProblem if code == 422 else Problem, "description": _DESCRIPTIONS[code]}
        for code in sorted(set(codes))
    }
