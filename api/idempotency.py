"""Idempotency-Key for POSTs: a retried POST gets the first answer; another body under the key is 409.

Per caller (token name), route and key, one Redis string (TTL):

    {"state": "pending", "fp": <body fingerprint>, "nonce": ...}          while the first POST runs
    {"state": "done", "fp": ..., "status": 202, "body": {...}, "headers": {"Location": ...}}
                                                                        its answer, for ttl_s

`begin` claims the key with `SET NX` (one of two concurrent retries wins; the other gets 409
"in progress" with Retry-After), `complete` swaps the claim for the answer and `abandon` drops it
(both only while the claim is still this request's: a compare-and-set script). A POST that dies
mid-way leaves a claim that expires after `pending_ttl_s`. Only 2xx answers are stored: a
failed POST may be retried with the same key.

Request and bulk ids the caller left out are derived from the key (`derived_id`), so a retry
after a partial failure (the broker went away after some messages were sent) sends the same ids
again instead of new ones, and the workers' per-request idempotence absorbs the repeats.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis as AsyncRedis

from api.problems import ApiError

__all__ = [
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENCY_KEY",
    "Claim",
    "IdempotencyStore",
    "Replayed",
    "fingerprint",
    "is_valid_key",
]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
# Key template (the caller's key is hashed, so nothing it sends becomes part of a key).
IDEMPOTENCY_KEY: Final = "{prefix}:api:idempotency:{digest}"
_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
_RETRY_AFTER_S: Final = "1"
_CAS_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def is_valid_key(value: str) -> bool:
    """1-255 visible ASCII characters (a UUID, say)."""
    return _KEY_RE.fullmatch(value) is not None


def fingerprint(route: str, body: Any) -> str:
    """SHA-256 of the route and the validated body in canonical JSON (key order, spacing ignored)."""
    text = json.dumps([route, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """This request holds the key: do the work, then `complete` or `abandon`."""

    redis_key: str
    scope_digest: str
    marker: str

    def derived_id(self, kind: str, index: int) -> str:
        """A stable id for the index-th item of this keyed POST (`req-...`, `bulk-...`)."""
        digest = hashlib.sha256(f"{self.scope_digest}:{kind}:{index}".encode()).hexdigest()
        return f"{kind}-{digest[:32]}"


@dataclass(frozen=True)
class Replayed:
    """The first answer under this key."""

    status: int
    body: Any
    headers: dict[str, str]


class IdempotencyStore:
    def __init__(self, redis: AsyncRedis, prefix: str, *, ttl_s: int, pending_ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s
        self._cas = redis.register_script(_CAS_SCRIPT)

    async def begin(self, caller: str, route: str, key: str, body_fingerprint: str) -> Claim | Replayed:
        """Claim the key, or return the stored answer; ApiError 409 for another body or a POST in flight."""
        scope_digest = hashlib.sha256(f"{caller}\0{route}\0{key}".encode()).hexdigest()
        redis_key = IDEMPOTENCY_KEY.format(prefix=self._prefix, digest=scope_digest)
        marker = json.dumps({"state": "pending", "fp": body_fingerprint, "nonce": secrets.token_hex(8)})
        # Two rounds: the stored value may expire between the failed SET NX and the GET.
        for _ in range(2):
            if await self._redis.set(redis_key, marker, nx=True, ex=self._pending_ttl_s):
                return Claim(redis_key, scope_digest, marker)
            raw = await self._redis.get(redis_key)
            if raw is None:
                continue
            stored = json.loads(raw)
            if stored.get("fp") != body_fingerprint:
                raise ApiError(409, f"this {IDEMPOTENCY_HEADER} was used with a different request body")
            if stored.get("state") == "done":
                return Replayed(int(stored["status"]), stored["body"], dict(stored.get("headers") or {}))
            raise ApiError(
                409,
                f"a request with this {IDEMPOTENCY_HEADER} is still in progress",
                headers={"Retry-After": _RETRY_AFTER_S},
            )
        raise ApiError(409, f"this {IDEMPOTENCY_HEADER} is contended; retry", headers={"Retry-After": _RETRY_AFTER_S})

    async def complete(self, claim: Claim, status: int, body: Any, headers: dict[str, str]) -> None:
        fp = json.loads(claim.marker)["fp"]
        answer = {"state": "done", "fp": fp, "status": status, "body": body, "headers": headers}
        done = json.dumps(answer, separators=(",", ":"))
        await self._cas(keys=[claim.redis_key], args=[claim.marker, done, self._ttl_s])

    async def abandon(self, claim: Claim) -> None:
        await self._cas(keys=[claim.redis_key], args=[claim.marker, "", 0])
