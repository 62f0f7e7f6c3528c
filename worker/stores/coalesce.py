"""Request coalescing: one pending refresh per package, later requests join it.

Every extra `RefreshPkgSource` re-copies the package to every distribution point, so while a
refresh of a package is pending (queued, waiting for a provider slot, waiting for its medium)
a new request for the same package joins it instead of refreshing again. Once the leader's
refresh has been accepted the leader closes the group: later requests lead anew (the source may
have changed since DistMgr took its snapshot).

    claim(...)             -> Leader (marker set, or extended when it already leads)
                              or Joined(leader_request_id) (listed as a follower)
    close(...)             when the leader's request ends (accepted, or failed for good): marker
                           deleted, followers moved to a per-leader "to publish" hash (TTL) and
                           returned, each to get the leader's final as its own
    ack_follower(...)      after publishing each follower's final outcome (the leader's status)
    pending_followers(...) what a leader that crashed after close still has to publish
    current_leader(...)    who leads the package now (a cancelled bulk child that leads is kept)

The protocol as the use case runs it (worker/usecase/delivery.py, steps `redelivery` and
`coalesce`): every delivery of a request claims, with a TTL of the visibility timeout plus the
longest countdown, so a leader's marker lives as long as its message keeps coming back. A
follower's message is re-queued with the longest countdown as a watcher; each time it runs it
first checks its own final marker (the leader may have published it: the redelivery is
dropped), then claims again: while its leader lives it stays Joined; if the leader's marker
expired without a close (a worker died and its message was lost), the claim makes it the leader
(or a follower of whoever leads now). Nothing waits forever. Every step is one Lua script
(worker/stores/coalesce.lua) or one command, idempotent, and every key expires: the marker and
followers with `ttl_s`, the to-publish hash after `publish_ttl_s`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from redis import Redis

from config.settings import LimitSettings
from worker.domain.ids import is_request_id_key_part
from worker.domain.packages import validate_package_id, validate_site_code
from worker.stores.keys import RedisKeys
from worker.stores.lua import load_script
from worker.usecase.values import ClaimResult, Closed, Follower, Joined, Leader

__all__ = [
    "MAX_INFO_BYTES",
    "MAX_TTL_S",
    "ClaimResult",
    "Closed",
    "Coalescer",
    "Follower",
    "Joined",
    "Leader",
]

_SCRIPT: Final = "coalesce.lua"
MAX_INFO_BYTES: Final = 16_384
MAX_TTL_S: Final = 30 * 24 * 3600
# Followers still to publish outlive their leader as long as a final marker does.
_DEFAULT_PUBLISH_TTL_S: Final = LimitSettings().final_marker_ttl_s


class Coalescer:
    """Leader markers and follower lists in Redis (see the module docstring)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, publish_ttl_s: int = _DEFAULT_PUBLISH_TTL_S) -> None:
        if not (1 <= publish_ttl_s <= MAX_TTL_S):
            raise ValueError(f"publish_ttl_s must be in [1, {MAX_TTL_S}]")
        self._redis = redis
        self._keys = keys
        self._publish_ttl_ms = int(publish_ttl_s) * 1000
        self._script = load_script(redis, _SCRIPT)

    def claim(
        self, site_code: str, package_id: str, request_id: str, info: Mapping[str, Any], *, ttl_s: float
    ) -> ClaimResult:
        """Become the package's leader, or join the pending one (listed once however often asked).

        `info` is what the leader needs to publish this request's final outcome (request and task
        ids, correlation id, requested_at, ...): a JSON object of at most 16 KiB.
        """
        info_json = _info_json(info)
        reply = self._run(site_code, package_id, request_id, "claim", request_id, info_json, _ttl_ms(ttl_s))
        kind, leader = reply
        return Leader(str(leader)) if kind == "leader" else Joined(str(leader))

    def close(self, site_code: str, package_id: str, leader_id: str) -> Closed:
        """End the group once the leader's refresh is accepted; returns the followers to publish.

        Only the current leader closes (later requests then lead anew). Whoever calls, the reply
        lists what is still to publish for `leader_id`, so a redelivered close after a crash
        finds the followers the first one moved.
        """
        closed, flat = self._run(site_code, package_id, leader_id, "close", leader_id, self._publish_ttl_ms)
        return Closed(bool(int(closed)), _followers(flat))

    def pending_followers(self, leader_id: str) -> tuple[Follower, ...]:
        """Followers handed over by `close` whose final outcome is not yet acknowledged."""
        raw = self._redis.hgetall(self._keys.coalesce_to_publish(_checked_id(leader_id)))
        return _followers([item for pair in raw.items() for item in pair])

    def ack_follower(self, leader_id: str, follower_request_id: str) -> bool:
        """Forget a follower once its final outcome is published; False if it was not pending."""
        key = self._keys.coalesce_to_publish(_checked_id(leader_id))
        return bool(self._redis.hdel(key, _checked_id(follower_request_id)))

    def current_leader(self, site_code: str, package_id: str) -> str | None:
        """The request id leading the package now, if any."""
        value = self._redis.get(
            self._keys.coalesce_leader(validate_site_code(site_code), validate_package_id(package_id))
        )
        return None if value is None else str(value)

    def _run(self, site_code: str, package_id: str, request_id: str, op: str, *args: str | int) -> Any:
        site = validate_site_code(site_code)
        package = validate_package_id(package_id)
        keys = [
            self._keys.coalesce_leader(site, package),
            self._keys.coalesce_followers(site, package),
            self._keys.coalesce_to_publish(_checked_id(request_id)),
        ]
        return self._script(keys=keys, args=[op, *args])


def _checked_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not is_request_id_key_part(request_id):
        raise ValueError(f"request id must be 1-256 characters without whitespace, got {str(request_id)[:40]!r}")
    return request_id


def _ttl_ms(ttl_s: float) -> int:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not (0.001 <= ttl_s <= MAX_TTL_S):
        raise ValueError(f"ttl_s must be in [0.001, {MAX_TTL_S}], got {ttl_s!r}")
    return max(1, round(ttl_s * 1000))


def _info_json(info: Mapping[str, Any]) -> str:
    if not isinstance(info, Mapping):
        raise ValueError("follower info must be a mapping (a JSON object)")
    try:
        text = json.dumps(dict(info), separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"follower info is not JSON-serialisable: {type(exc).__name__}") from None
    if len(text.encode()) > MAX_INFO_BYTES:
        raise ValueError(f"follower info exceeds {MAX_INFO_BYTES} bytes as JSON")
    return text


def _followers(flat: list[Any]) -> tuple[Follower, ...]:
    pairs = [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]
    return tuple(Follower(request_id, json.loads(info)) for request_id, info in sorted(pairs))
