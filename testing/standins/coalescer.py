"""Request coalescing in memory: worker/stores/coalesce.py's Coalescer without Redis.

The same protocol as coalesce.lua: a leader marker per package living `ttl_s` from its latest
claim (a claim only lengthens it), the followers that joined it living as long as the marker,
and, once the leader closes, the followers it still has to publish, kept `publish_ttl_s`. Where
Redis lets a key expire, this reads the clock it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from config.settings import LimitSettings
from worker.domain.packages import validate_package_id, validate_site_code
from worker.usecase.values import ClaimResult, Closed, Follower, Joined, Leader

__all__ = ["MemoryCoalescer"]

_Package = tuple[str, str]  # (site code, PackageID)
_K = TypeVar("_K")


@dataclass
class _Expiring:
    """A Redis hash with a TTL: gone once `expires_at_s` has come (or when emptied)."""

    expires_at_s: float
    entries: dict[str, str] = field(default_factory=dict)  # request id -> info JSON


class MemoryCoalescer:
    """Leader markers and follower lists in dicts (see the module docstring)."""

    def __init__(self, now: Callable[[], float], *, publish_ttl_s: int = LimitSettings().final_marker_ttl_s) -> None:
        self._now = now
        self._publish_ttl_s = float(publish_ttl_s)
        self._markers: dict[_Package, tuple[str, float]] = {}  # -> (leader id, expires at)
        self._followers: dict[_Package, _Expiring] = {}
        self._to_publish: dict[str, _Expiring] = {}  # leader id -> followers still to publish

    def claim(
        self, site_code: str, package_id: str, request_id: str, info: Mapping[str, Any], *, ttl_s: float
    ) -> ClaimResult:
        """Become the package's leader, or join the pending one (listed once however often asked)."""
        now, package = self._now(), _package(site_code, package_id)
        info_json = json.dumps(dict(info), separators=(",", ":"), sort_keys=True, allow_nan=False)
        leader = self.current_leader(*package)
        followers = _alive(self._followers, package, now)
        if leader is None:
            self._markers[package] = (request_id, now + ttl_s)
            # A follower taking over from a dead leader must not be published as its own follower.
            if followers is not None:
                followers.entries.pop(request_id, None)
            result: ClaimResult = Leader(request_id)
        elif leader == request_id:
            self._markers[package] = (leader, max(self._markers[package][1], now + ttl_s))
            result = Leader(request_id)
        else:
            if followers is None:
                followers = self._followers[package] = _Expiring(expires_at_s=now)
            followers.entries[request_id] = info_json
            result = Joined(leader)
        if followers is not None and followers.entries:
            # Followers live as long as the marker they joined (their watchers take over after).
            followers.expires_at_s = max(followers.expires_at_s, self._markers[package][1])
        else:
            self._followers.pop(package, None)
        return result

    def close(self, site_code: str, package_id: str, leader_id: str) -> Closed:
        """End the group if `leader_id` leads it; whoever calls gets what is still to publish for it."""
        now, package = self._now(), _package(site_code, package_id)
        closed = self.current_leader(*package) == leader_id
        if closed:
            del self._markers[package]
            followers = _alive(self._followers, package, now)
            self._followers.pop(package, None)
            to_publish = _alive(self._to_publish, leader_id, now) or _Expiring(expires_at_s=now)
            to_publish.entries.update(followers.entries if followers is not None else {})
            if to_publish.entries:
                to_publish.expires_at_s = now + self._publish_ttl_s
                self._to_publish[leader_id] = to_publish
        return Closed(closed, self.pending_followers(leader_id))

    def pending_followers(self, leader_id: str) -> tuple[Follower, ...]:
        """Followers handed over by `close` whose final outcome is not yet acknowledged."""
        to_publish = _alive(self._to_publish, leader_id, self._now())
        entries = {} if to_publish is None else to_publish.entries
        return tuple(Follower(request_id, json.loads(entries[request_id])) for request_id in sorted(entries))

    def ack_follower(self, leader_id: str, follower_request_id: str) -> bool:
        """Forget a follower once its final outcome is published; False if it was not pending."""
        to_publish = _alive(self._to_publish, leader_id, self._now())
        if to_publish is None or to_publish.entries.pop(follower_request_id, None) is None:
            return False
        if not to_publish.entries:
            del self._to_publish[leader_id]
        return True

    def current_leader(self, site_code: str, package_id: str) -> str | None:
        """The request id leading the package now, if any."""
        package = _package(site_code, package_id)
        marker = self._markers.get(package)
        if marker is None or marker[1] <= self._now():
            self._markers.pop(package, None)
            return None
        return marker[0]


def _package(site_code: str, package_id: str) -> _Package:
    return validate_site_code(site_code), validate_package_id(package_id)


def _alive(table: dict[_K, _Expiring], key: _K, now: float) -> _Expiring | None:
    """The entry under `key` unless it expired (an expired one is dropped, as Redis drops the key)."""
    entry = table.get(key)
    if entry is not None and entry.expires_at_s <= now:
        del table[key]
        return None
    return entry
