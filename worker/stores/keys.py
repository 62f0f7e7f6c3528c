"""Every Redis key and channel name sccm-refresh uses, in one place (see docs/outcomes.md).

Keys are built from a prefix so several deployments (and every test) can share one Redis
without seeing each other's data. Templates below are the single source of the key layout;
`RedisKeys` fills them in and validates the parts that come from requests.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

from worker.domain.ids import is_bulk_id, is_key_part, is_request_id_key_part

__all__ = [
    "ATTEMPT_LOCK",
    "BULK_CHILDREN",
    "BULK_DP_RANK",
    "BULK_DP_STRAGGLERS",
    "BULK_FINAL_MARKER",
    "BULK_FOLLOWING",
    "BULK_HEARTBEATS",
    "BULK_PENDING",
    "BULK_RECORD",
    "BULK_STATES",
    "BULK_TAKEN",
    "COALESCE_FOLLOWERS",
    "COALESCE_LEADER",
    "COALESCE_TO_PUBLISH",
    "DEFAULT_PREFIX",
    "FINAL_MARKER",
    "FOLLOW_FOLLOWED",
    "FOLLOW_READING",
    "FOLLOW_ROWS_KEPT",
    "FOLLOW_SETTLED",
    "FOLLOW_SNAPSHOT",
    "HEALTH_PROBE_REPLY",
    "INVOKE_FENCE",
    "METRICS_ERRORS",
    "METRICS_FOLLOW_DUE",
    "METRICS_FOLLOW_LIVE",
    "METRICS_FOLLOW_STRAGGLERS",
    "METRICS_FOLLOW_TARGETS",
    "METRICS_LATENCY",
    "METRICS_OUTCOMES",
    "OUTCOME_CHANNEL",
    "OUTCOME_STREAM",
    "PACKAGE_STATE",
    "REDISTRIBUTE_MARK",
    "REJECTED_MARKER_PREFIX",
    "REJECTION_MARKER",
    "REQUEST_STATE",
    "SITES",
    "SLOT_HOLDERS",
    "SLOT_LEASES",
    "SLOT_PARKED",
    "SLOT_PREWOKEN",
    "SLOT_SIGNAL",
    "SLOT_STATS",
    "SLOT_WAITERS",
    "SLOT_WAITER_DEADLINES",
    "STATE_FIELD_ATTEMPT",
    "STATE_FIELD_FINAL",
    "STATE_FIELD_OUTCOME",
    "STATE_FIELD_REQUESTED_AT",
    "STATE_FIELD_REQUEST_ID",
    "STATE_FIELD_SOURCE_VERSION",
    "STATE_FIELD_STATUS",
    "STATE_FIELD_STREAM_ID",
    "STATE_FIELD_UPDATED_AT",
    "STREAM_FIELD_FINAL",
    "STREAM_FIELD_KIND",
    "STREAM_FIELD_OUTCOME",
    "STREAM_FIELD_PACKAGE_ID",
    "STREAM_FIELD_REQUEST_ID",
    "STREAM_FIELD_SITE_CODE",
    "STREAM_FIELD_STATUS",
    "STREAM_KIND_BULK",
    "WATCH_DEADLINES",
    "WATCH_MESSAGES",
    "WORKERS_SEEN",
    "BulkKeys",
    "FollowKeys",
    "FollowMetricKeys",
    "RedisKeys",
    "SlotKeys",
]

DEFAULT_PREFIX = "sccm-refresh"

# Key templates ("{prefix}" and friends are filled in by RedisKeys).
OUTCOME_STREAM = "{prefix}:outcomes"  # XADD, trimmed with MAXLEN ~
OUTCOME_CHANNEL = "{prefix}:outcomes:live"  # PUBLISH; the payload is the outcome JSON
PACKAGE_STATE = "{prefix}:package:{site_code}:{package_id}"  # hash: latest state of one package
FINAL_MARKER = "{prefix}:final:{request_id}"  # string (stream entry id), TTL: final published once
# A rejection's final marker holds this prefix before the stream id: it answers one message and
# does not reserve the request id (a fixed request under the same id still runs).
REJECTED_MARKER_PREFIX = "rejected:"
REJECTION_MARKER = "{prefix}:rejection:{message_key}"  # string (stream id), TTL: one rejection per message
# Written just before RefreshPkgSource is invoked (a snapshot of the package), deleted with the
# final outcome: a redelivery that finds it checks whether that invoke landed before invoking again.
INVOKE_FENCE = "{prefix}:fence:{request_id}"
# Held while one delivery of a request attempts it (string: a random token, TTL): a second copy of
# the same message (kombu restores unacked messages when a connection drops, while the first copy
# still runs on its thread) waits instead of attempting alongside it.
ATTEMPT_LOCK = "{prefix}:attempt:{request_id}"
# The watch over live requests (worker/stores/request_watch.py): when each is next due, and its message.
WATCH_DEADLINES = "{prefix}:watch:deadlines"  # zset request id -> epoch; member removed with the final
WATCH_MESSAGES = "{prefix}:watch:messages"  # hash request id -> "<task id> <kwargs JSON>"; removed with the final
# Latest event of one request (hash, same fields as the package state plus `stream_id`), TTL as
# the final marker: what `GET /v1/refreshes/{id}` reads in O(1).
REQUEST_STATE = "{prefix}:request:{request_id}"
# Counters the outcome writer keeps for /metrics, so reading metrics never scans the stream.
METRICS_OUTCOMES = "{prefix}:metrics:outcomes"  # hash "<status>|<site>" -> events published
METRICS_ERRORS = "{prefix}:metrics:errors"  # hash "<kind>|<retrying|final>" -> events
METRICS_LATENCY = "{prefix}:metrics:latency"  # hash: histogram of request-to-final seconds ("le:<b>", sum, count)
WORKERS_SEEN = "{prefix}:workers"  # zset worker node name -> last sweep (epoch s); old members trimmed
SITES = "{prefix}:sites"  # hash site code -> max_concurrency, as the workers are configured (for /metrics)
# Requests followed to every DP, per site, kept by the outcome writer for /metrics (no TTL: each
# request's share leaves with its final). live: hash request id -> its share (JSON: counts, stragglers);
# targets: hash row status -> targets in it; stragglers: hash DP name -> requests it holds back;
# due: zset request id -> when its share is dropped even without a final (epoch s).
METRICS_FOLLOW_LIVE = "{prefix}:metrics:follow:{site_code}:live"
METRICS_FOLLOW_TARGETS = "{prefix}:metrics:follow:{site_code}:targets"
METRICS_FOLLOW_STRAGGLERS = "{prefix}:metrics:follow:{site_code}:stragglers"
METRICS_FOLLOW_DUE = "{prefix}:metrics:follow:{site_code}:due"

# Per-provider concurrency cap (worker/stores/slots.py): one set per site, every key with a TTL.
# A lane within a site (a class refreshed one at a time) has its own set: "{site_code}" is then
# "<site>.<lane>" (a site code never holds a ".").
SLOT_HOLDERS = "{prefix}:slots:{site_code}:holders"  # zset holder id -> lease expiry (epoch s)
SLOT_LEASES = "{prefix}:slots:{site_code}:leases"  # hash holder id -> "<acquired_at> <token>"
SLOT_WAITERS = "{prefix}:slots:{site_code}:waiters"  # zset holder id -> priority * 1e13 + arrival seq
SLOT_WAITER_DEADLINES = "{prefix}:slots:{site_code}:waiter-deadlines"  # zset holder id -> deadline (epoch s)
SLOT_STATS = "{prefix}:slots:{site_code}:stats"  # hash: seq, limit, ewma_hold_s, counters
SLOT_PARKED = "{prefix}:slots:{site_code}:parked"  # hash holder id -> wake record JSON (its message)
# zset holder -> when its message was sent back early (a woken-ahead waiter; -1: it came back
# and parked again, so it is not woken ahead again): worker/stores/slots.lua `wake_ahead`
SLOT_PREWOKEN = "{prefix}:slots:{site_code}:prewoken"
# list: the token a release pushes to a waiter blocked in its thread (BLPOP), TTL 60 s.
SLOT_SIGNAL = "{prefix}:slots:{site_code}:signal:{holder_id}"
# Request coalescing (worker/stores/coalesce.py).
COALESCE_LEADER = "{prefix}:coalesce:{site_code}:{package_id}"  # string: leader request id, TTL
COALESCE_FOLLOWERS = "{prefix}:coalesce:{site_code}:{package_id}:followers"  # hash follower id -> info JSON
COALESCE_TO_PUBLISH = "{prefix}:coalesce-publish:{request_id}"  # hash follower id -> info JSON, TTL
# Following to every DP (worker/stores/follow_snapshots.py), per site and kind ("versions", "rows").
FOLLOW_FOLLOWED = "{prefix}:follow:{site_code}:{kind}:followed"  # zset package id -> last poll (epoch s)
# hash package id -> JSON, and "" -> when it was complete; one per snapshot interval ("epoch"), TTL
FOLLOW_SNAPSHOT = "{prefix}:follow:{site_code}:{kind}:snapshot:{epoch}"
FOLLOW_READING = "{prefix}:follow:{site_code}:{kind}:reading:{epoch}"  # string: the reader's token, TTL
# hash package id -> [rollup, read at, rows] JSON: rows kept across intervals while the rollup stands still
FOLLOW_ROWS_KEPT = "{prefix}:follow:{site_code}:{kind}:kept"
# zset package id -> the highest V1 its followers wait for: rows installed at it are left out of reads
FOLLOW_SETTLED = "{prefix}:follow:{site_code}:{kind}:settled"
# Opt-in redistribution (worker/stores/redistribution_marks.py): string, PX the window. The DP is
# named by a digest of its case-folded NAL path (quotes, brackets and backslashes never reach a key).
REDISTRIBUTE_MARK = "{prefix}:redistribute:{site_code}:{package_id}:{nal_digest}"
# Bulk jobs (worker/stores/bulk_store.py); every key of a bulk shares its TTL, refreshed on each write.
BULK_RECORD = "{prefix}:bulk:{bulk_id}"  # hash: the job record and its counters
BULK_PENDING = "{prefix}:bulk:{bulk_id}:pending"  # list "<child request id> <spec JSON>", not yet taken
BULK_TAKEN = "{prefix}:bulk:{bulk_id}:taken"  # hash child request id -> spec JSON: outstanding children
BULK_HEARTBEATS = "{prefix}:bulk:{bulk_id}:heartbeats"  # zset child request id -> last sign of life
# zset child request id -> when it was taken, until its first delivery checks in: a child whose
# dispatcher died between taking it and publishing its message has no message anywhere.
BULK_UNDELIVERED = "{prefix}:bulk:{bulk_id}:undelivered"
BULK_CHILDREN = "{prefix}:bulk:{bulk_id}:children"  # set of child ids appended (dedupe while enumerating)
# hash child request id -> its last straggler marks: children accepted and followed to every DP
# (until=distributed). They leave the window (taken) at acceptance and stay here until their final.
BULK_FOLLOWING = "{prefix}:bulk:{bulk_id}:following"
# The stragglers rollup, kept as children report (worker/domain/stragglers.py): hash
# "<status>|<dp>" / "~source" / "~unlisted" -> packages, and zset dp -> packages it holds back.
BULK_DP_STRAGGLERS = "{prefix}:bulk:{bulk_id}:dp-stragglers"
BULK_DP_RANK = "{prefix}:bulk:{bulk_id}:dp-rank"
BULK_FINAL_MARKER = "{prefix}:bulk-final:{bulk_id}"  # string (stream id), TTL: the bulk outcome published once
BULK_STATES = "{prefix}:metrics:bulks"  # hash state -> bulk jobs in it (kept by bulk_store.lua)

# Worker liveness probe (ops/health.py): the probe task pushes its node name here; the checker
# BLPOPs it and deletes it. TTL'd in case the checker gave up before the reply came.
HEALTH_PROBE_REPLY = "{prefix}:health:{token}"

# Flat fields of a stream entry, next to the full JSON, so consumers can filter cheaply.
STREAM_FIELD_OUTCOME = "outcome"
STREAM_FIELD_KIND = "kind"  # "request" (an outcome document) or "bulk" (a bulk job's final outcome)
STREAM_KIND_BULK = "bulk"
STREAM_FIELD_REQUEST_ID = "request_id"
STREAM_FIELD_PACKAGE_ID = "package_id"
STREAM_FIELD_SITE_CODE = "site_code"
STREAM_FIELD_STATUS = "status"
STREAM_FIELD_FINAL = "final"

# Fields of the latest-state hash. requested_at and attempt decide whether an outcome may
# overwrite the stored one (see worker/stores/outcome_writer.lua and docs/outcomes.md).
STATE_FIELD_STATUS = "status"
STATE_FIELD_REQUEST_ID = "request_id"
STATE_FIELD_FINAL = "final"
STATE_FIELD_UPDATED_AT = "updated_at"
STATE_FIELD_SOURCE_VERSION = "source_version"
STATE_FIELD_OUTCOME = "outcome"
STATE_FIELD_REQUESTED_AT = "requested_at"
STATE_FIELD_ATTEMPT = "attempt"
STATE_FIELD_STREAM_ID = "stream_id"  # request state only

_PREFIX = re.compile(r"^[A-Za-z0-9_.\-:]{1,64}$")


class SlotKeys(NamedTuple):
    """One site's concurrency-cap keys, in the order worker/stores/slots.lua takes them."""

    holders: str
    leases: str
    waiters: str
    waiter_deadlines: str
    stats: str
    parked: str
    prewoken: str


class FollowKeys(NamedTuple):
    followed: str
    snapshot: str
    reading: str
    kept: str
    settled: str


class FollowMetricKeys(NamedTuple):
    """One site's following counters, in the order worker/stores/outcome_writer.lua takes them."""

    live: str
    targets: str
    stragglers: str
    due: str


class BulkKeys(NamedTuple):
    """One bulk job's keys, in the order worker/stores/bulk_store.lua takes them."""

    record: str
    pending: str
    taken: str
    heartbeats: str
    children: str
    undelivered: str
    following: str
    dp_stragglers: str
    dp_rank: str


def _key_part(name: str, value: str) -> str:
    if not is_key_part(value):
        raise ValueError(f"{name} cannot be part of a Redis key: {value[:40]!r}")
    # Site codes and package ids are case-insensitive in ConfigMgr: one hash per package.
    return value.upper()


@dataclass(frozen=True)
class RedisKeys:
    """The key layout under one prefix (default "sccm-refresh"; tests use "t-<uuid8>")."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix) or self.prefix.endswith(":"):
            raise ValueError(f"invalid Redis key prefix: {self.prefix[:40]!r}")

    @property
    def outcome_stream(self) -> str:
        return OUTCOME_STREAM.format(prefix=self.prefix)

    @property
    def outcome_channel(self) -> str:
        return OUTCOME_CHANNEL.format(prefix=self.prefix)

    def package_state(self, site_code: str, package_id: str) -> str:
        return PACKAGE_STATE.format(
            prefix=self.prefix,
            site_code=_key_part("site_code", site_code),
            package_id=_key_part("package_id", package_id),
        )

    def final_marker(self, request_id: str) -> str:
        # The request id is the key's last part, so a ":" inside it cannot collide.
        if not is_request_id_key_part(request_id):
            raise ValueError(f"request_id cannot be part of a Redis key: {request_id[:40]!r}")
        return FINAL_MARKER.format(prefix=self.prefix, request_id=request_id)

    def rejection(self, message_key: str) -> str:
        if not is_request_id_key_part(message_key):
            raise ValueError(f"message key cannot be part of a Redis key: {message_key[:40]!r}")
        return REJECTION_MARKER.format(prefix=self.prefix, message_key=message_key)

    def request_state(self, request_id: str) -> str:
        if not is_request_id_key_part(request_id):
            raise ValueError(f"request_id cannot be part of a Redis key: {request_id[:40]!r}")
        return REQUEST_STATE.format(prefix=self.prefix, request_id=request_id)

    @property
    def metrics(self) -> tuple[str, str, str]:
        """The outcome, error and latency counters (in the order the writer's script takes them)."""
        prefix = self.prefix
        return (
            METRICS_OUTCOMES.format(prefix=prefix),
            METRICS_ERRORS.format(prefix=prefix),
            METRICS_LATENCY.format(prefix=prefix),
        )

    def follow_metrics(self, site_code: str) -> FollowMetricKeys:
        """The counters /metrics reads about the requests followed to every DP at one site."""
        parts = {"prefix": self.prefix, "site_code": _key_part("site_code", site_code)}
        return FollowMetricKeys(
            METRICS_FOLLOW_LIVE.format(**parts),
            METRICS_FOLLOW_TARGETS.format(**parts),
            METRICS_FOLLOW_STRAGGLERS.format(**parts),
            METRICS_FOLLOW_DUE.format(**parts),
        )

    @property
    def sites(self) -> str:
        return SITES.format(prefix=self.prefix)

    @property
    def workers_seen(self) -> str:
        return WORKERS_SEEN.format(prefix=self.prefix)

    @property
    def watch_deadlines(self) -> str:
        return WATCH_DEADLINES.format(prefix=self.prefix)

    @property
    def watch_messages(self) -> str:
        return WATCH_MESSAGES.format(prefix=self.prefix)

    def attempt_lock(self, request_id: str) -> str:
        if not is_request_id_key_part(request_id):
            raise ValueError(f"request_id cannot be part of a Redis key: {request_id[:40]!r}")
        return ATTEMPT_LOCK.format(prefix=self.prefix, request_id=request_id)

    def health_probe_reply(self, token: str) -> str:
        if not is_key_part(token):
            raise ValueError(f"probe token cannot be part of a Redis key: {token[:40]!r}")
        return HEALTH_PROBE_REPLY.format(prefix=self.prefix, token=token)

    def invoke_fence(self, request_id: str) -> str:
        if not is_request_id_key_part(request_id):
            raise ValueError(f"request_id cannot be part of a Redis key: {request_id[:40]!r}")
        return INVOKE_FENCE.format(prefix=self.prefix, request_id=request_id)

    def slot_keys(self, site_code: str, *, lane: str | None = None) -> SlotKeys:
        """The keys of one site's concurrency cap, or of one of its lanes."""
        site = _key_part("site_code", site_code)
        if lane is not None:
            site = f"{site}.{_key_part('lane', lane)}"
        return SlotKeys(
            *(
                template.format(prefix=self.prefix, site_code=site)
                for template in (
                    SLOT_HOLDERS,
                    SLOT_LEASES,
                    SLOT_WAITERS,
                    SLOT_WAITER_DEADLINES,
                    SLOT_STATS,
                    SLOT_PARKED,
                    SLOT_PREWOKEN,
                )
            )
        )

    def slot_signal(self, site_code: str, holder_id: str) -> str:
        """The key a blocked waiter for one of a site's slots waits on (worker/stores/slots.py `await_slot`).

        The holder id (a request id: a bulk child's has a ":") ends the key, as it is."""
        if not is_request_id_key_part(holder_id):
            raise ValueError(f"holder_id cannot be part of a Redis key: {holder_id[:40]!r}")
        return SLOT_SIGNAL.format(prefix=self.prefix, site_code=_key_part("site_code", site_code), holder_id=holder_id)

    def follow_keys(self, site_code: str, kind: str, epoch: int) -> FollowKeys:
        """The keys of one site's snapshot of `kind` for one snapshot interval."""
        parts = {"prefix": self.prefix, "site_code": _key_part("site_code", site_code), "kind": kind}
        if kind not in ("versions", "rows") or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"no follow snapshot of kind {kind[:20]!r} at epoch {epoch!r}")
        return FollowKeys(
            FOLLOW_FOLLOWED.format(**parts),
            FOLLOW_SNAPSHOT.format(**parts, epoch=epoch),
            FOLLOW_READING.format(**parts, epoch=epoch),
            FOLLOW_ROWS_KEPT.format(**parts),
            FOLLOW_SETTLED.format(**parts),
        )

    def redistribute_mark(self, site_code: str, package_id: str, nal_path: str) -> str:
        """The marker of RefreshNow sent to one package on one DP (at most one per window)."""
        digest = hashlib.sha256(nal_path.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return REDISTRIBUTE_MARK.format(
            prefix=self.prefix,
            site_code=_key_part("site_code", site_code),
            package_id=_key_part("package_id", package_id),
            nal_digest=digest,
        )

    def coalesce_leader(self, site_code: str, package_id: str) -> str:
        return COALESCE_LEADER.format(
            prefix=self.prefix,
            site_code=_key_part("site_code", site_code),
            package_id=_key_part("package_id", package_id),
        )

    def coalesce_followers(self, site_code: str, package_id: str) -> str:
        return COALESCE_FOLLOWERS.format(
            prefix=self.prefix,
            site_code=_key_part("site_code", site_code),
            package_id=_key_part("package_id", package_id),
        )

    def coalesce_to_publish(self, leader_request_id: str) -> str:
        if not is_request_id_key_part(leader_request_id):
            raise ValueError(f"request_id cannot be part of a Redis key: {leader_request_id[:40]!r}")
        return COALESCE_TO_PUBLISH.format(prefix=self.prefix, request_id=leader_request_id)

    def bulk_final_marker(self, bulk_id: str) -> str:
        if not is_bulk_id(bulk_id):
            raise ValueError(f"bulk_id cannot be part of a Redis key: {str(bulk_id)[:40]!r}")
        return BULK_FINAL_MARKER.format(prefix=self.prefix, bulk_id=bulk_id)

    @property
    def bulk_states(self) -> str:
        return BULK_STATES.format(prefix=self.prefix)

    def bulk_keys(self, bulk_id: str) -> BulkKeys:
        """The keys of one bulk job."""
        if not is_bulk_id(bulk_id):
            raise ValueError(f"bulk_id cannot be part of a Redis key: {str(bulk_id)[:40]!r}")
        return BulkKeys(
            *(
                template.format(prefix=self.prefix, bulk_id=bulk_id)
                for template in (
                    BULK_RECORD,
                    BULK_PENDING,
                    BULK_TAKEN,
                    BULK_HEARTBEATS,
                    BULK_CHILDREN,
                    BULK_UNDELIVERED,
                    BULK_FOLLOWING,
                    BULK_DP_STRAGGLERS,
                    BULK_DP_RANK,
                )
            )
        )
