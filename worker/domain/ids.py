"""What can name a request, a bulk job or a key part: the id rules every layer checks against.

A site code or package id sits in the middle of Redis keys (no ":"), a request id only ends one
(anything but whitespace), a bulk id names a job and its children (`<bulk id>:<PackageID>`).
"""

from __future__ import annotations

import re

from errors import InvalidRequestError
from worker.domain.packages import validate_package_id

__all__ = [
    "BULK_ID_HEX_DIGITS",
    "BULK_ID_PREFIX",
    "child_request_id",
    "claimed_bulk",
    "is_bulk_id",
    "is_key_part",
    "is_request_id_key_part",
]

# A key part must not contain ":" (it would make "site:package" ambiguous) nor whitespace.
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_REQUEST_ID = re.compile(r"^\S{1,256}$")
# A bulk id is minted by the producers (producers.bulk.new_bulk_id, or derived from an API
# Idempotency-Key): "bulk-" and 32 lowercase hex digits, nothing else. A strict shape keeps it
# apart from site codes and free-form correlation ids ("PS1", "null"), and from keys' ":".
BULK_ID_PREFIX = "bulk-"
BULK_ID_HEX_DIGITS = 32
_BULK_ID = re.compile(re.escape(BULK_ID_PREFIX) + f"[0-9a-f]{{{BULK_ID_HEX_DIGITS}}}")


def is_key_part(value: str) -> bool:
    """True when `value` can be a site code or package id inside a key."""
    return bool(_KEY_PART.fullmatch(value))


def is_request_id_key_part(value: str) -> bool:
    """True when `value` can end a key: 1-256 characters, no whitespace (":" is fine at the end)."""
    return bool(_REQUEST_ID.fullmatch(value))


def is_bulk_id(value: object) -> bool:
    """True when `value` has a bulk id's shape: "bulk-" and 32 lowercase hex digits. Never raises."""
    return isinstance(value, str) and _BULK_ID.fullmatch(value) is not None


def child_request_id(bulk_id: str, package_id: str) -> str:
    """The deterministic request id of a bulk's child: the same package always gets the same id."""
    if not is_bulk_id(bulk_id):
        raise ValueError(f"invalid bulk id: {str(bulk_id)[:40]!r}")
    return f"{bulk_id}:{validate_package_id(package_id)}"


def claimed_bulk(request_id: object) -> str | None:
    """The bulk whose child this request id would be (`<bulk id>:<PACKAGEID>`), or None. Never raises.

    Only the shape: a request is a child when its bulk's record also lists it (`child_checkin`
    says it is outstanding; `child_finished` counts only an outstanding child). The correlation
    id plays no part: any producer can put a bulk's id there.
    """
    if not isinstance(request_id, str):
        return None
    bulk_id, colon, package_id = request_id.partition(":")
    if not colon or not is_bulk_id(bulk_id):
        return None
    try:
        canonical = validate_package_id(package_id)
    except InvalidRequestError:
        return None
    # child_request_id writes the PackageID upper-cased: another spelling is another request.
    return bulk_id if canonical == package_id else None
