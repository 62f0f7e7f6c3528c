"""Per-site snapshots against a real redis-server: followers at one site share one chunked read.

The provider is a counting stand-in (the emulator's reads are in test_follow_to_dps.py): what is
under test is who reads, how often, and what the others are answered from.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest
import redis

from config.settings import FollowSettings
from errors import TransientError
from testing.threads import run_in_threads
from worker.domain.deadline import Deadline
from worker.domain.distribution import ContentCounts, DpState, DpStatusBatch, DpStatusRow, PackageVersion
from worker.domain.packages import PackageInfo
from worker.domain.request import RefreshRequest, parse_request
from worker.stores.follow_snapshots import SiteSnapshots
from worker.stores.keys import RedisKeys
from worker.usecase.attempt import UngatedOperations

pytestmark = pytest.mark.integration

SITE = "PS1"
POLICY = FollowSettings(first_poll_s=60, max_poll_s=600, snapshot_s=60, snapshot_wait_s=5)


def nal(dp: str) -> str:
    return f'["Display=\\\\{dp}\\"]MSWNET:["SMS_SITE=PS1"]\\\\{dp}\\'


def request(number: int) -> RefreshRequest:
    return parse_request({"site_code": SITE, "package_id": f"PS1{number:05d}", "until": "distributed"})


@dataclass
class CountingClient:
    """Answers every package at version 7 on two DPs; counts each kind of read."""

    calls: dict[str, int] = field(default_factory=lambda: {"versions": 0, "rows": 0, "gets": 0, "counts": 0})
    in_flight: set[str] = field(default_factory=set)  # their rollup says both DPs are copying
    rows_asked: list[str] = field(default_factory=list)
    settled_asked: dict[str, int] = field(default_factory=dict)
    fail: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _count(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] += 1
        if self.fail:
            raise TransientError("provider away")

    def get_package(self, package_class: str, package_id: str, *, deadline: Deadline | None = None) -> PackageInfo:
        self._count("gets")
        return PackageInfo(class_name=package_class, package_id=package_id, source_version=7)

    def read_source_versions(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        self._count("versions")
        return DpStatusBatch(versions=tuple(PackageVersion(p, 7) for p in package_ids))

    def read_dp_status(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        ids = list(package_ids)
        self._count("rows")
        self.rows_asked.extend(ids)
        rows = [DpStatusRow(p, nal(dp), dp, DpState.INSTALLED, 0, 7) for p in ids for dp in ("DP01", "DP02")]
        return DpStatusBatch(rows=tuple(rows))

    def read_unsettled_dp_status(
        self, settled_at: Mapping[str, int], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        # Every row is installed at 7: only packages waited for at a later version list theirs.
        self.settled_asked.update(settled_at)
        return self.read_dp_status([p for p, version in settled_at.items() if version > 7])

    def read_content_counts(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        self._count("counts")
        return DpStatusBatch(
            counts=tuple(
                ContentCounts(p, 2, 0, 2, 0, 0) if p in self.in_flight else ContentCounts(p, 2, 2, 0, 0, 0)
                for p in package_ids
            )
        )

    def read_dp_messages(
        self, package_ids: Iterable[str], *, max_rows: int = 50_000, deadline: Deadline | None = None
    ) -> DpStatusBatch:
        return DpStatusBatch()


@pytest.fixture
def client() -> CountingClient:
    return CountingClient()


def snapshots(redis_client: redis.Redis, keys: RedisKeys, client: CountingClient, now: float) -> SiteSnapshots:
    return SiteSnapshots(redis_client, keys, SITE, client, policy=POLICY, clock=lambda: now)


def test_followers_polling_in_one_interval_share_one_read(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """450 followers registered, then polled at once from two "workers": one versions read (three
    chunked queries of <= 200 packages), and every follower answered from it."""
    now = 1_800_000_000.0
    workers = [snapshots(redis_client, redis_keys, client, now) for _ in range(2)]
    requests = [request(n) for n in range(450)]
    for req in requests:  # each was polled once before (the previous interval): now followed
        redis_client.zadd(redis_keys.follow_keys(SITE, "versions", 0).followed, {req.package_id: now - 1})
    answers: dict[str, int | None] = {}

    def poll(index: int) -> None:
        answers[requests[index].package_id] = workers[index % 2].source_version(
            requests[index], UngatedOperations(), deadline=None
        )

    assert run_in_threads(len(requests), poll) == []
    assert set(answers.values()) == {7} and len(answers) == 450
    assert client.calls["versions"] == 3 and client.calls["gets"] == 0


def test_a_package_first_polled_after_the_read_is_skipped_until_the_next_interval(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """The interval's snapshot is complete without it: no read of its own, it joins the next one."""
    now = 1_800_000_000.0
    reader = snapshots(redis_client, redis_keys, client, now)
    gate = UngatedOperations()
    assert reader.dp_rows(request(1), gate, max_rows=100, deadline=None) is not None
    assert reader.dp_rows(request(2), gate, max_rows=100, deadline=None) is None
    later = snapshots(redis_client, redis_keys, client, now + POLICY.snapshot_s)
    batch = later.dp_rows(request(2), gate, max_rows=100, deadline=None)
    assert batch is not None and {r.dp_name for r in batch.rows} == {"DP01", "DP02"}
    assert client.calls["rows"] == 2  # one snapshot per interval, no read of its own


def test_a_failed_read_lets_the_next_poll_of_the_interval_read_again(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """The reader's error reaches its poll (logged and skipped there); its lock is dropped, so the
    next poll reads again instead of waiting for a snapshot that will never come."""
    now = 1_800_000_000.0
    reader = snapshots(redis_client, redis_keys, client, now)
    client.fail = True
    with pytest.raises(TransientError):
        reader.source_version(request(1), UngatedOperations(), deadline=None)
    client.fail = False
    assert reader.source_version(request(1), UngatedOperations(), deadline=None) == 7
    assert client.calls["versions"] == 2


def test_an_entry_that_is_not_ours_is_not_trusted(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """A snapshot entry that does not rebuild into rows (written by someone else, or damaged) is
    never taken for DP status: the package reads its own."""
    now = 1_800_000_000.0
    reader = snapshots(redis_client, redis_keys, client, now)
    keys = redis_keys.follow_keys(SITE, "rows", int(now // POLICY.snapshot_s))
    redis_client.hset(keys.snapshot, mapping={"PS100001": '[["not a NAL path", 0, 7, null, null]]', "": "1"})
    batch = reader.dp_rows(request(1), UngatedOperations(), max_rows=100, deadline=None)
    assert batch is not None and len(batch.rows) == 2
    assert client.calls["rows"] == 1


def test_snapshot_keys_expire(redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient) -> None:
    """Nothing a snapshot writes outlives a few intervals: a site that stops following leaves no keys."""
    now = 1_800_000_000.0
    snapshots(redis_client, redis_keys, client, now).source_version(request(1), UngatedOperations(), deadline=None)
    keys = redis_client.keys(f"{redis_keys.prefix}:follow:*")
    assert keys and all(redis_client.ttl(key) > 0 for key in keys)


def test_a_poll_finding_a_read_under_way_waits_briefly_then_skips_or_reads_its_own(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """Another worker holds the interval's read: a poll waits FOLLOW__SNAPSHOT_WAIT_S, then is skipped
    (no read alongside, no thread held for a long read); once that reader has given up, it reads its own."""
    now = 1_800_000_000.0
    policy = POLICY.model_copy(update={"snapshot_wait_s": 0.2})
    reader = SiteSnapshots(redis_client, redis_keys, SITE, client, policy=policy, clock=lambda: now)
    keys = redis_keys.follow_keys(SITE, "rows", int(now // POLICY.snapshot_s))
    redis_client.set(keys.reading, "another-worker", px=60_000)
    assert reader.dp_rows(request(1), UngatedOperations(), max_rows=100, deadline=None) is None
    assert client.calls["rows"] == 0
    redis_client.delete(keys.reading)
    redis_client.set(keys.reading, "another-worker", px=100)  # a reader that dies mid-wait
    batch = reader.dp_rows(request(1), UngatedOperations(), max_rows=100, deadline=None)
    assert batch is not None and len(batch.rows) == 2 and client.calls["rows"] == 1


def test_rows_are_read_only_where_the_rollup_says_a_verdict_may_be_near(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """300 followed packages, 250 with copies in flight: one rollup read per 200, rows for the 50
    that may be done (only rows tell V1 from V0) and a small sample of the rest; a package in flight
    is answered None (no rows this poll) unless rows are required (its final by the deadline)."""
    now = 1_800_000_000.0
    reader = snapshots(redis_client, redis_keys, client, now)
    requests = [request(n) for n in range(300)]
    client.in_flight = {req.package_id for req in requests[50:]}
    for req in requests:
        redis_client.zadd(redis_keys.follow_keys(SITE, "rows", 0).followed, {req.package_id: now - 1})
    gate = UngatedOperations()
    answers = [reader.dp_rows(req, gate, max_rows=100, deadline=None) for req in requests]
    assert client.calls["counts"] == 2
    assert all(batch is not None and len(batch.rows) == 2 for batch in answers[:50])
    sampled = set(client.rows_asked) - {req.package_id for req in requests[:50]}
    assert len(sampled) < 50  # about 250 / (rows_refresh_s / snapshot_s) = 25
    pairs = zip(requests[50:], answers[50:], strict=True)
    assert all((batch is None) == (req.package_id not in sampled) for req, batch in pairs)
    assert client.calls["rows"] == 1  # the 50 and the sample gathered into one read of <= 200
    in_flight = next(req for req in requests[50:] if req.package_id not in sampled)
    required = reader.dp_rows(in_flight, gate, max_rows=100, deadline=None, required=True)
    assert required is not None and len(required.rows) == 2 and client.calls["rows"] == 2


def test_a_request_with_its_answer_leaves_the_followed_set(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """Past phase one it leaves the versions snapshot; with its final, the rows snapshot too: a
    package left registered would be read every interval for another hour."""
    now = 1_800_000_000.0
    reader = snapshots(redis_client, redis_keys, client, now)
    versions, rows = (redis_keys.follow_keys(SITE, kind, 0).followed for kind in ("versions", "rows"))
    assert reader.source_version(request(1), UngatedOperations(), deadline=None) == 7
    assert reader.dp_rows(request(1), UngatedOperations(), max_rows=100, deadline=None) is not None
    reader.forget(request(1), rows=False)
    assert redis_client.zcard(versions) == 0 and redis_client.zcard(rows) == 1
    reader.forget(request(1), rows=True)
    assert redis_client.zcard(rows) == 0


def test_rows_read_once_are_reused_while_the_rollup_stands_still(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """A package whose DPs all read installed is read once, then answered from the kept rows at
    later intervals (its request polls only every few minutes); once its rollup moves, it is read
    again; its final forgets the kept rows."""
    now = 1_800_000_000.0
    gate = UngatedOperations()
    first = snapshots(redis_client, redis_keys, client, now).dp_rows(request(1), gate, max_rows=100, deadline=None)
    later = snapshots(redis_client, redis_keys, client, now + POLICY.snapshot_s)
    kept = later.dp_rows(request(1), gate, max_rows=100, deadline=None)
    assert first is not None and kept == first
    assert client.calls["rows"] == 1 and later.packages_rows_kept == 1
    client.in_flight = {request(1).package_id}  # the rollup moved: copies started again
    moved = snapshots(redis_client, redis_keys, client, now + 2 * POLICY.snapshot_s)
    moved.dp_rows(request(1), gate, max_rows=100, deadline=None)
    assert moved.packages_rows_kept == 0
    moved.forget(request(1), rows=True)
    assert not redis_client.exists(redis_keys.follow_keys(SITE, "rows", 0).kept)


def test_rows_installed_at_the_followers_version_are_left_out_of_the_read(
    redis_client: redis.Redis, redis_keys: RedisKeys, client: CountingClient
) -> None:
    """A follower that knows its V1 registers it: the shared read asks only for rows not installed
    at the highest V1 of the package, so a package done costs no rows; its answer says so
    (`settled_at`), and followers waiting for a later version than that read their own."""
    now = 1_800_000_000.0
    gate = UngatedOperations()
    reader = snapshots(redis_client, redis_keys, client, now)
    done = reader.dp_rows(request(1), gate, max_rows=100, deadline=None, v1=7)
    assert done is not None and done.rows == () and done.settled_at == 7
    assert client.settled_asked == {request(1).package_id: 7} and client.rows_asked == []
    # Another follower of the package, at a version the read did not ask about: its own read.
    newer = reader.dp_rows(request(1), gate, max_rows=100, deadline=None, v1=8)
    assert newer is not None and newer.settled_at is None and len(newer.rows) == 2
    # The next interval reads against the highest V1 registered: rows at 7 are not settled at 8.
    later = snapshots(redis_client, redis_keys, client, now + POLICY.snapshot_s)
    again = later.dp_rows(request(1), gate, max_rows=100, deadline=None, v1=7)
    assert again is not None and again.settled_at == 8 and len(again.rows) == 2
    later.forget(request(1), rows=True)
    assert not redis_client.exists(redis_keys.follow_keys(SITE, "rows", 0).settled)
