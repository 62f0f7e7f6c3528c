"""The worker takes messages by moving them, so a worker killed while taking one cannot lose it.

The take script runs on a real Redis; the end-to-end case leaves a message where a SIGKILL between
the take and kombu's unacked record would leave it (a dead consumer's in-flight list) and watches
a real worker deliver it to its one final outcome.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from testing.fixtures_pipeline import Pipeline
from testing.waiting import wait_until
from worker.broker.transport import ack_script, hold_script, take_script, transport_options

pytestmark = pytest.mark.integration

ALIVE_S = 15
RECOVERY_S = 5


class Consumer:
    """One consumer's view of the take script, under a private prefix."""

    def __init__(self, client: redis.Redis, prefix: str, name: str, *, unacked: str = "unacked") -> None:
        self.client = client
        self.base = f"{prefix}:{name}"
        self.registry = f"{prefix}:registry"
        self.gate = f"{prefix}:recovery-gate"
        self.unacked = unacked
        self.holders = f"{prefix}:holders"
        self.holder = f"{prefix}:holder:{name}"
        self.dead_holders: list[str] = []

    def take(
        self, *queues: str, wait_key: str | None = None, retired: tuple[str, ...] = (), postpone_s: int = 0
    ) -> tuple[str, str, int]:
        keys = [self.base, self.registry, self.gate, self.unacked, self.holders, *queues]
        args: list[str | int] = [ALIVE_S, RECOVERY_S, wait_key or queues[0], self.holder, postpone_s, *retired]
        reply = self.client.eval(take_script(), len(keys), *keys, *args)
        queue, item, restored, *self.dead_holders = reply
        return queue, item, int(restored)

    def inflight(self, queue: str) -> str:
        return f"{self.base}|{queue}"

    def die(self) -> None:
        """What a SIGKILL leaves: no more takes, so its alive keys lapse (here at once)."""
        self.client.delete(f"{self.base}:alive", f"{self.holder}:alive")
        self.client.delete(self.gate)  # and the next take is due to look for dead consumers

    def hold(self, queue: str, item: str, tag: str) -> int:
        """What QoS.append runs when kombu records the delivered message `item` as unacked."""
        keys = [self.inflight(queue), "unacked_index", self.unacked, f"{self.holder}:held", self.holders]
        return int(self.client.eval(hold_script(), len(keys), *keys, item, tag, 1.0, f"[{tag!r}]", self.holder))


def publish(client: redis.Redis, queue: str, *items: str) -> None:
    """As kombu publishes: LPUSH, so the oldest message is at the right end."""
    for item in items:
        client.lpush(queue, item)


def message(tag: str) -> str:
    return json.dumps({"body": "e30=", "properties": {"delivery_tag": tag}})


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}:inflight"


def test_a_take_moves_the_first_waiting_message_into_the_consumers_inflight_list(
    redis_client: redis.Redis, prefix: str
) -> None:
    consumer = Consumer(redis_client, prefix, "w1")
    publish(redis_client, "q-high", message("a"))
    publish(redis_client, "q-low", message("b"), message("c"))
    assert consumer.take("q-empty", "q-high", "q-low") == ("q-high", message("a"), 0)
    assert consumer.take("q-empty", "q-high", "q-low") == ("q-low", message("b"), 0)  # oldest first
    assert redis_client.lrange(consumer.inflight("q-high"), 0, -1) == [message("a")]
    assert redis_client.lrange(consumer.inflight("q-low"), 0, -1) == [message("b")]
    assert redis_client.hget(consumer.registry, consumer.inflight("q-low")) == "q-low"
    assert redis_client.ttl(f"{consumer.base}:alive") > 0


def test_a_take_with_nothing_waiting_marks_the_consumer_alive_and_registers_its_wait(
    redis_client: redis.Redis, prefix: str
) -> None:
    consumer = Consumer(redis_client, prefix, "w1")
    assert consumer.take("q-a", "q-b", wait_key="q-a") == ("", "", 0)
    assert redis_client.hget(consumer.registry, consumer.inflight("q-a")) == "q-a"
    assert 0 < redis_client.ttl(f"{consumer.base}:alive") <= ALIVE_S


def test_a_dead_consumers_inflight_messages_go_back_to_the_head_of_their_queue(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead, live = Consumer(redis_client, prefix, "dead"), Consumer(redis_client, prefix, "live")
    publish(redis_client, "q", message("held"), message("newer"))
    assert dead.take("q")[1] == message("held")
    dead.die()
    queue, item, restored = live.take("q")
    assert restored == 1
    assert (queue, item) == ("q", message("held"))  # back where it was taken from: next in line
    assert not redis_client.exists(dead.inflight("q"))


def test_a_live_consumers_inflight_messages_stay_where_they_are(redis_client: redis.Redis, prefix: str) -> None:
    busy, other = Consumer(redis_client, prefix, "busy"), Consumer(redis_client, prefix, "other")
    publish(redis_client, "q", message("a"))
    busy.take("q")
    assert other.take("q") == ("", "", 0)
    assert redis_client.lrange(busy.inflight("q"), 0, -1) == [message("a")]


def test_a_message_kombu_already_holds_as_unacked_is_not_put_back_twice(redis_client: redis.Redis, prefix: str) -> None:
    dead, live = Consumer(redis_client, prefix, "dead"), Consumer(redis_client, prefix, "live")
    publish(redis_client, "q", message("recorded"))
    dead.take("q")
    redis_client.hset("unacked", "recorded", "[...]")  # kombu's record: its own restore brings it back
    dead.die()
    assert live.take("q") == ("", "", 0)
    assert not redis_client.exists(dead.inflight("q"))


def test_recovery_runs_at_most_once_per_interval(redis_client: redis.Redis, prefix: str) -> None:
    first, second, live = (Consumer(redis_client, prefix, n) for n in ("first", "second", "live"))
    publish(redis_client, "q", message("a"), message("b"))
    first.take("q")
    second.take("q")
    first.die()
    second.die()
    assert live.take("q-other")[2] == 2
    publish(redis_client, "q", message("c"))
    first.take("q")
    first.client.delete(f"{first.base}:alive")  # dead again, but the gate stays shut for RECOVERY_S
    assert live.take("q-other")[2] == 0
    assert redis_client.llen(first.inflight("q")) == 1


def test_a_consumer_its_process_has_closed_is_restored_at_the_next_take_whatever_its_alive_key(
    redis_client: redis.Redis, prefix: str
) -> None:
    """Named as retired: its alive key goes, the gate is passed, and its message is next in line."""
    closed, successor = Consumer(redis_client, prefix, "closed"), Consumer(redis_client, prefix, "successor")
    publish(redis_client, "q", message("stranded"))
    closed.take("q")  # alive for ALIVE_S, and the recovery gate now shut for RECOVERY_S
    assert successor.take("q-other")[2] == 0, "not retired: nothing to restore yet"
    queue, item, restored = successor.take("q", retired=(closed.base,))
    assert (queue, json.loads(item)["properties"]["delivery_tag"], restored) == ("q", "stranded", 1)
    assert not redis_client.exists(f"{closed.base}:alive") and not redis_client.exists(closed.inflight("q"))


def test_an_item_that_is_not_json_still_goes_back(redis_client: redis.Redis, prefix: str) -> None:
    dead, live = Consumer(redis_client, prefix, "dead"), Consumer(redis_client, prefix, "live")
    publish(redis_client, "q", "{" * 5000)
    dead.take("q")
    dead.die()
    assert live.take("q-other")[2] == 1
    assert redis_client.lrange("q", 0, -1) == ["{" * 5000]


def test_recording_a_delivery_clears_its_inflight_entry_and_lists_it_among_the_holdings(
    redis_client: redis.Redis, prefix: str
) -> None:
    consumer = Consumer(redis_client, prefix, "w1")
    publish(redis_client, "q", message("a"))
    _, item, _ = consumer.take("q")
    assert consumer.hold("q", item, "a") == 1
    assert redis_client.llen(consumer.inflight("q")) == 0
    assert redis_client.hexists("unacked", "a") and redis_client.zscore("unacked_index", "a") == 1.0
    assert redis_client.smembers(f"{consumer.holder}:held") == {"a"}
    assert redis_client.smembers(consumer.holders) == {consumer.holder}


def test_a_delivery_whose_inflight_entry_was_given_back_is_not_recorded(redis_client: redis.Redis, prefix: str) -> None:
    """A frozen worker taken for dead lost its claim: on waking it must not run the message too."""
    frozen, other = Consumer(redis_client, prefix, "frozen"), Consumer(redis_client, prefix, "other")
    publish(redis_client, "q", message("a"))
    _, item, _ = frozen.take("q")
    frozen.die()
    assert other.take("q") == ("q", message("a"), 1)  # given back, and taken by the other at once
    assert frozen.hold("q", item, "a") == 0
    assert not redis_client.exists("unacked") and not redis_client.exists(f"{frozen.holder}:held")


def test_a_dead_holder_is_named_by_the_next_recovery_take(redis_client: redis.Redis, prefix: str) -> None:
    dead, live = Consumer(redis_client, prefix, "dead"), Consumer(redis_client, prefix, "live")
    publish(redis_client, "q", message("a"))
    _, item, _ = dead.take("q")
    dead.hold("q", item, "a")
    dead.die()
    live.take("q-other")
    assert live.dead_holders == [dead.holder]


def test_a_live_holder_is_not_named(redis_client: redis.Redis, prefix: str) -> None:
    busy, other = Consumer(redis_client, prefix, "busy"), Consumer(redis_client, prefix, "other")
    publish(redis_client, "q", message("a"))
    _, item, _ = busy.take("q")
    busy.hold("q", item, "a")
    redis_client.delete(busy.gate)
    other.take("q-other")
    assert other.dead_holders == []


def test_a_retired_holder_is_named_at_once_whatever_its_alive_key(redis_client: redis.Redis, prefix: str) -> None:
    closed, successor = Consumer(redis_client, prefix, "closed"), Consumer(redis_client, prefix, "successor")
    publish(redis_client, "q", message("a"))
    _, item, _ = closed.take("q")
    closed.hold("q", item, "a")
    successor.take("q-other", retired=(closed.base, closed.holder))
    assert successor.dead_holders == [closed.holder]
    assert not redis_client.exists(f"{closed.holder}:alive")


def test_a_message_a_worker_died_taking_reaches_its_final_outcome(pipeline: Pipeline) -> None:
    """What a SIGKILL between the take and kombu's unacked record leaves behind is delivered."""
    request_id, raw = pipeline.refresh_message()
    options = transport_options(prefix=pipeline.keys.prefix, main_queue=pipeline.queue)
    dead_list = f"{options['inflight_prefix']}:gone-host:4242:deadbeef|{pipeline.queue}"
    client = pipeline.redis()
    try:
        client.lpush(dead_list, raw)
        client.hset(f"{options['inflight_prefix']}:registry", dead_list, pipeline.queue)
        assert wait_until(lambda: len(pipeline.finals().get(request_id, [])) == 1, timeout_s=RECOVERY_S + 25)
        assert not client.exists(dead_list)
    finally:
        client.close()
    (final,) = pipeline.finals()[request_id]
    assert final.status == "accepted"
    assert "message(s) of a dead consumer back on their queues" in pipeline.worker.output()


def inflight_entries(pipeline: Pipeline) -> dict[str, int]:
    options = transport_options(prefix=pipeline.keys.prefix, main_queue=pipeline.queue)
    client = pipeline.redis()
    try:
        lists = client.hkeys(f"{options['inflight_prefix']}:registry")
        return {name: int(client.llen(name)) for name in lists}
    finally:
        client.close()


def test_a_message_held_by_a_worker_is_in_unacked_and_in_no_inflight_list(pipeline: Pipeline) -> None:
    """The in-flight entry leaves with kombu's unacked record: a message is never counted twice."""
    provider = pipeline.emulators["PS1"].provider
    pkg = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    provider.set_medium_ready(pkg["PackageID"], False)
    kwargs = {"site_code": "PS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]}
    request_id = pipeline.send(kwargs)
    try:
        assert wait_until(lambda: pipeline.held_retry_states(request_id) != [], timeout_s=20)
        entries = inflight_entries(pipeline)
        assert entries and all(length == 0 for length in entries.values()), entries
    finally:
        provider.set_medium_ready(pkg["PackageID"], True)
    assert wait_until(lambda: len(pipeline.finals().get(request_id, [])) == 1, timeout_s=30)


def test_refreshes_go_on_after_redis_forgets_the_take_script(pipeline: Pipeline) -> None:
    """SCRIPT FLUSH (or a restart) empties Redis's script cache: the next take sends it whole."""
    client = pipeline.redis()
    try:
        client.script_flush()
    finally:
        client.close()
    pkg = pipeline.package("PS1", pkg_source_flag=2)
    run = pipeline.refresh(site_code="PS1", package_id=pkg["PackageID"], package_class=pkg["class"], timeout_s=30)
    assert run.final is not None and run.final.status == "accepted", run.statuses


def ack(consumer: Consumer, tag: str) -> int:
    """What QoS.ack runs: remove kombu's record of `tag`, only while `consumer` holds it."""
    keys = ["unacked_index", consumer.unacked, f"{consumer.holder}:held"]
    return int(consumer.client.eval(ack_script(), len(keys), *keys, tag))


def restored_dead_consumer(client: redis.Redis, prefix: str) -> tuple[Consumer, Consumer]:
    """A consumer that took a message and died, and one whose recovery pass has just put it back on "q"."""
    dead, live = Consumer(client, prefix, "dead"), Consumer(client, prefix, "live")
    publish(client, "q", message("a"))
    dead.take("q")
    dead.die()
    assert live.take("q-other")[2] == 1
    return dead, live


def test_a_move_into_a_dead_consumers_list_after_its_recovery_is_put_back_by_a_later_pass(
    redis_client: redis.Redis, prefix: str
) -> None:
    """A frozen consumer's blocking move can land after the pass that restored its list: a later pass restores it."""
    frozen, live = restored_dead_consumer(redis_client, prefix)
    redis_client.lpush(frozen.inflight("q"), message("late"))  # what its BLMOVE, served late, does
    redis_client.delete(live.gate)
    assert live.take("q-other")[2] == 1
    assert redis_client.lrange("q", 0, -1) == [message("a"), message("late")]


def test_a_dead_consumers_list_is_forgotten_a_minute_after_it_was_last_found_holding_something(
    redis_client: redis.Redis, prefix: str
) -> None:
    dead, live = restored_dead_consumer(redis_client, prefix)
    assert redis_client.hexists(live.registry, dead.inflight("q"))
    now_s = int(redis_client.time()[0])
    redis_client.hset(f"{live.registry}:dead", dead.inflight("q"), now_s - 61)
    redis_client.delete(live.gate)
    live.take("q-other")
    assert not redis_client.hexists(live.registry, dead.inflight("q"))
    assert not redis_client.hexists(f"{live.registry}:dead", dead.inflight("q"))


def test_a_consumer_alive_again_is_no_longer_marked_dead(redis_client: redis.Redis, prefix: str) -> None:
    """A frozen consumer that resumes takes again: its lists are its own again, not counted down to removal."""
    frozen, live = restored_dead_consumer(redis_client, prefix)
    assert redis_client.hexists(f"{live.registry}:dead", frozen.inflight("q"))
    frozen.take("q")
    redis_client.delete(live.gate)
    live.take("q-other")
    assert not redis_client.hexists(f"{live.registry}:dead", frozen.inflight("q"))
    assert redis_client.hexists(live.registry, frozen.inflight("q"))


def test_a_take_just_after_refused_writes_restores_only_its_own_retired_lists_and_holds_the_rest_off(
    redis_client: redis.Redis, prefix: str
) -> None:
    """Alive keys lapsed while Redis refused writes: a live consumer is not taken for dead before its next beat."""
    lapsed, closed = Consumer(redis_client, prefix, "lapsed"), Consumer(redis_client, prefix, "closed")
    successor = Consumer(redis_client, prefix, "successor")
    publish(redis_client, "q", message("lapsed"), message("closed"))
    lapsed.take("q")
    closed.take("q")
    lapsed.die()
    assert successor.take("q-other", retired=(closed.base,), postpone_s=ALIVE_S)[2] == 1
    assert redis_client.lrange("q", 0, -1) == [message("closed")]
    assert redis_client.llen(lapsed.inflight("q")) == 1
    assert RECOVERY_S < redis_client.ttl(successor.gate) <= ALIVE_S
    assert successor.take("q-other")[2] == 0  # the gate holds the general pass off
    redis_client.delete(successor.gate)
    assert successor.take("q-other")[2] == 1


def test_an_ack_removes_the_record_of_a_message_its_consumer_holds(redis_client: redis.Redis, prefix: str) -> None:
    consumer = Consumer(redis_client, prefix, "w1")
    publish(redis_client, "q", message("a"))
    _, item, _ = consumer.take("q")
    consumer.hold("q", item, "a")
    assert ack(consumer, "a") == 1
    assert not redis_client.hexists("unacked", "a") and redis_client.zscore("unacked_index", "a") is None
    assert not redis_client.exists(f"{consumer.holder}:held")


def test_a_late_ack_from_a_consumer_taken_for_dead_leaves_the_next_holders_record(
    redis_client: redis.Redis, prefix: str
) -> None:
    """Put back (its holder taken for dead), taken by another under the same tag: the late ack erases nothing."""
    frozen, other = Consumer(redis_client, prefix, "frozen"), Consumer(redis_client, prefix, "other")
    publish(redis_client, "q", message("a"))
    _, item, _ = frozen.take("q")
    frozen.hold("q", item, "a")
    # kombu's restore of a dead holder's message (QoS.restore_held): record, index and holding go in one MULTI.
    restore = redis_client.pipeline()
    restore.zrem("unacked_index", "a")
    restore.hdel("unacked", "a")
    restore.srem(f"{frozen.holder}:held", "a")
    restore.rpush("q", item)
    restore.execute()
    _, again, _ = other.take("q")
    assert other.hold("q", again, "a") == 1
    assert ack(frozen, "a") == 0
    assert redis_client.hexists("unacked", "a") and redis_client.smembers(f"{other.holder}:held") == {"a"}
