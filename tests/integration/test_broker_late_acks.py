"""A consumer cut off from Redis never erases another's record nor goes silent (real kombu, real Redis).

A late ack never erases the record of the consumer that holds the message now:

A consumer cut off from its broker (a Redis restart, a frozen process taken for dead) has what it
held put back on the queue: by its own channel's close, or by another worker's recovery. Another
consumer then takes the message, under the same delivery tag, and kombu records it as unacked
for that consumer. The first consumer's tasks still run (Celery's thread pool cannot stop them),
and when one ends it acks through its old channel. Before, that ack deleted the record by tag,
whoever's it was: the message then lived only in the second consumer's memory (a countdown), and
nothing would have brought it back had that consumer died or reconnected. Now the ack removes
only a record its own consumer still holds.

And a consumer whose blocking take was answered just before a Redis restart never goes silent:
the record of the delivery (hold.lua) and the other commands of the transport go over pooled
connections, never the consuming socket, which redis-py would otherwise reconnect behind kombu's
poller (the poller then watches the old socket, and the worker takes nothing more while its
heartbeat keeps its holdings from anyone else).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import kombu.connection
import kombu.entity
import kombu.messaging
import pytest

import worker.broker.transport as broker
from testing.fixtures_redis import RedisServerFactory
from testing.redis_full import redis_full
from worker.stores.redis_client import redis_from_url

pytestmark = pytest.mark.integration

DRAIN_TIMEOUT_S = 5.0
UNACKED = "unacked"
# kombu ships no type information: its classes are used as Any.
Connection: Any = kombu.connection.Connection
Consumer: Any = kombu.messaging.Consumer
Producer: Any = kombu.messaging.Producer
Exchange: Any = kombu.entity.Exchange
Queue: Any = kombu.entity.Queue
Message = Any


class Side:
    """One consumer of our transport: its own connection and channel, and what it received."""

    def __init__(self, url: str, prefix: str, queue: Queue) -> None:
        options = broker.transport_options(prefix=prefix, main_queue=queue.name)
        self.connection = Connection(url, transport=broker.TRANSPORT, transport_options=options)
        self.channel = self.connection.channel()
        self.received: list[Message] = []
        self.consumer = Consumer(self.channel, [queue], callbacks=[self._on_message], accept=["json"])
        self.consumer.consume()

    def _on_message(self, body: Any, message: Message) -> None:
        self.received.append(message)

    def receive_one(self) -> Message:
        self.connection.drain_events(timeout=DRAIN_TIMEOUT_S)
        return self.received[-1]

    def publish(self, queue: Queue, body: dict[str, Any]) -> None:
        Producer(self.connection.channel()).publish(
            body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
        )

    def close(self) -> None:
        self.connection.release()


@pytest.fixture
def queue() -> Queue:
    name = f"late-ack-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sides(redis_url: str, prefix: str, queue: Queue) -> Iterator[tuple[Side, Side]]:
    first, second = Side(redis_url, prefix, queue), Side(redis_url, prefix, queue)
    try:
        yield first, second
    finally:
        second.close()
        first.close()


def test_a_late_ack_through_a_closed_channel_leaves_the_record_of_the_consumer_that_took_the_message_next(
    redis_url: str, queue: Queue, sides: tuple[Side, Side]
) -> None:
    first, second = sides
    Producer(first.connection.channel()).publish(
        {"n": 1}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
    )
    held = first.receive_one()
    first.channel.close()  # cut off: kombu puts what it held back on the queue
    again = second.receive_one()
    assert again.delivery_tag == held.delivery_tag
    client = redis_from_url(redis_url)
    try:
        assert client.hexists(UNACKED, again.delivery_tag)
        held.ack()  # the task of the first consumer ends after all, and acks through its old channel
        assert client.hexists(UNACKED, again.delivery_tag), "the late ack erased the second consumer's record"
        again.ack()
        assert not client.hexists(UNACKED, again.delivery_tag)
    finally:
        client.close()


def test_a_consumer_whose_take_was_answered_just_before_a_redis_restart_never_goes_silent(
    redis_server_factory: RedisServerFactory, prefix: str, queue: Queue
) -> None:
    """The take's reply waits in the socket while Redis restarts: each later drain delivers, or says the connection
    is gone (Celery's consumer then reconnects); none waits out its timeout with messages queued."""
    server = redis_server_factory(appendfsync="always")
    side = Side(server.url, prefix, queue)
    try:
        side.publish(queue, {"n": 1})
        side.receive_one().ack()
        # Nothing waiting: the blocking take is sent, and the drain gives up before its reply.
        with pytest.raises(TimeoutError):
            side.connection.drain_events(timeout=0.2)
        side.publish(queue, {"n": 2})  # the pending take moves it and answers; the reply is not read yet
        server.restart()  # AOF, fsync always: the move survives
        side.publish(queue, {"n": 3})
        for _ in range(2):
            try:
                side.connection.drain_events(timeout=DRAIN_TIMEOUT_S)
            except TimeoutError:
                pytest.fail(f"the consumer went silent with messages queued (received {len(side.received) - 1})")
            except side.connection.connection_errors:
                break  # told: Celery's consumer would reconnect now, and the retired take is put back
    finally:
        side.close()


def test_a_requeue_published_at_the_front_is_taken_before_the_backlog_queued_before_it(
    redis_url: str, prefix: str, queue: Queue
) -> None:
    """A request's own re-queue goes before the requests that arrived after it, not behind them."""
    options = broker.transport_options(prefix=prefix, main_queue=queue.name)
    with Connection(redis_url, transport=broker.TRANSPORT, transport_options=options) as connection:
        producer = Producer(connection.channel())

        def publish(n: object) -> None:
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])

        for n in range(3):
            publish(n)
        with broker.published_at_front():
            publish("again")
        publish(3)
    consumer = Side(redis_url, prefix, queue)
    try:
        order = []
        for _ in range(5):
            message = consumer.receive_one()
            order.append(message.payload["n"])
            message.ack()
    finally:
        consumer.close()
    assert order == ["again", 0, 1, 2, 3]


def test_a_requeue_that_a_full_redis_refuses_is_kept_and_put_back_once_it_takes_writes(
    redis_server_factory: RedisServerFactory, prefix: str, queue: Queue
) -> None:
    """kombu restores a rejected message in a MULTI; a full Redis refuses it (a queued write, or the EXEC:
    EXECABORT): that is a pause, never an error out of the consumer's loop, which Celery takes for
    unrecoverable and stops the worker."""
    server = redis_server_factory()
    side = Side(server.url, prefix, queue)
    admin = redis_from_url(server.url)
    try:
        side.publish(queue, {"n": 1})
        held = side.receive_one()
        with redis_full(admin):
            held.reject(requeue=True)  # raised ExecAbortError before
            assert admin.hexists(UNACKED, held.delivery_tag), "a refused re-queue must leave the message held"
        side.channel.qos.restore_deferred()
        again = side.receive_one()
        assert again.payload == {"n": 1}
        again.ack()
        assert not admin.hexists(UNACKED, again.delivery_tag)
    finally:
        admin.close()
        side.close()
