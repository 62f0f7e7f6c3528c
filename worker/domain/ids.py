"""What can name a request, a bulk job or a key part: the id rules every layer checks against.

A site code or package id sits in the middle of Redis keys (no ":"), a request id only ends one
(anything but whitespace), a bulk id names a job and its children (`<bulk id>:<PackageID>`).
"""

from __future__ import annotations

import re

from worker.domain.packages import validate_package_id

__all__ = ["child_request_id", "is_bulk_id", "is_key_part", "is_request_id_key_part"]

# A key part must not contain ":" (it would make "site:package" ambiguous) nor whitespace.
_KEY_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_REQUEST_ID = re.compile(r"^\S{1,256}$")
# Bulk ids sit in the middle of keys: no ":" and, unlike site codes, case-sensitive.
_BULK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def is_key_part(value: str) -> bool:
    """True when `value` can be a site code or package id inside a key."""
    return bool(_KEY_PART.fullmatch(value))


def is_request_id_key_part(value: str) -> bool:
    """True when `value` can end a key: 1-256 characters, no whitespace (":" is fine at the end)."""
    return bool(_REQUEST_ID.fullmatch(value))


def is_bulk_id(value: str) -> bool:
    """True when `value` can name a bulk job: 1-128 of `A-Z a-z 0-9 _ . -`, starting alphanumeric."""
    return isinstance(value, str) and bool(_BULK_ID.fullmatch(value))


def child_request_id(bulk_id: str, package_id: str) -> str:
    """The deterministic request id of a bulk's child: the same package always gets the same id."""
    if not is_bulk_id(bulk_id):
        raise ValueError(f"invalid bulk id: {str(bulk_id)[:40]!r}")
    return f"{bulk_id}:{validate_package_id(package_id)}"
