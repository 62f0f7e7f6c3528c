"""kombu's private surface that worker/broker/transport.py and worker/broker/connection_loss.py override or call.

These are not public API: a kombu or celery minor release may rename or reshape them, and the
transport would then fail at run time (an AttributeError on every read looks like a lost connection
to kombu's consumer, so a worker would reconnect in a loop). pyproject.toml pins celery and kombu to
the minor this list was checked against; an upgrade that breaks it fails here, in the suite.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from celery.worker.consumer.consumer import Consumer
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from worker.broker import transport as reliable_broker

# (class, method, parameters after self) for every method overridden or called by name.
_METHODS: list[tuple[type[Any], str, tuple[str, ...]]] = [
    (kombu_redis.Channel, "_brpop_start", ("timeout",)),
    (kombu_redis.Channel, "_brpop_read", ("options",)),
    (kombu_redis.Channel, "_flush_brpop_reauth", ()),
    (kombu_redis.Channel, "_q_for_pri", ("queue", "pri")),
    # A parked request's message is captured where kombu would LPUSH it.
    (kombu_redis.Channel, "_put", ("queue", "message", "kwargs")),
    (kombu_redis.Channel, "_get_message_priority", ("message", "reverse")),
    (kombu_redis.Channel, "close", ()),
    (kombu_redis.QoS, "append", ("message", "delivery_tag")),
    (kombu_redis.QoS, "pipe_or_acquire", ("pipe", "client")),
    # What a full Redis changes: acks without MULTI, deferred re-queues, quiet sweeps.
    (kombu_redis.Channel, "maybe_refresh_binding_expiry", ()),
    (kombu_redis.Channel, "conn_or_acquire", ("client",)),
    (kombu_redis.QoS, "reject", ("delivery_tag", "requeue")),
    (kombu_redis.QoS, "restore_visible", ("start", "num", "interval")),
    (kombu_redis.QoS, "restore_by_tag", ("tag", "client", "leftmost")),
    (kombu_redis.QoS, "_remove_from_indices", ("delivery_tag", "pipe")),
    (virtual.QoS, "append", ("message", "delivery_tag")),
    (virtual.QoS, "ack", ("delivery_tag",)),
    (Consumer, "on_connection_error_after_connected", ("exc",)),
]

# Attributes read on the class (declared there by kombu).
_CLASS_ATTRIBUTES: list[tuple[type[Any], str]] = [
    (kombu_redis.Channel, "from_transport_options"),
    (kombu_redis.Channel, "priority_steps"),
    (kombu_redis.Channel, "sep"),
    (kombu_redis.Channel, "unacked_key"),
    (kombu_redis.Channel, "unacked_index_key"),
    (kombu_redis.Channel, "global_keyprefix"),
    (kombu_redis.Channel, "_in_poll"),
    (kombu_redis.Channel, "_brpop_sent_at"),
    (kombu_redis.Channel, "client"),
    (kombu_redis.Channel, "active_queues"),
    (kombu_redis.Transport, "Channel"),
    (kombu_redis.Transport, "connection_errors"),
]

# Attributes kombu sets on the instance in Channel.__init__ (a live channel needs a server).
_INSTANCE_ATTRIBUTES = ("_queue_cycle", "brpop_timeout", "connection", "connection_errors")


def _parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(function).parameters if name != "self")


@pytest.mark.parametrize(("owner", "name", "expected"), _METHODS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_overridden_and_called_kombu_methods_keep_their_signature(
    owner: type[Any], name: str, expected: tuple[str, ...]
) -> None:
    """Each private method the transport relies on exists and takes the parameters it passes."""
    method = getattr(owner, name, None)
    assert method is not None, f"{owner.__qualname__}.{name} is gone: re-check worker/broker/transport.py"
    assert _parameters(method) == expected


@pytest.mark.parametrize(("owner", "name"), _CLASS_ATTRIBUTES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_class_attributes_the_transport_reads_exist(owner: type[Any], name: str) -> None:
    """Each class-level attribute the transport reads is still declared by kombu."""
    assert hasattr(owner, name), f"{owner.__qualname__}.{name} is gone: re-check worker/broker/transport.py"


@pytest.mark.parametrize("name", _INSTANCE_ATTRIBUTES)
def test_instance_attributes_the_transport_reads_are_set_by_kombu(name: str) -> None:
    """kombu's Channel (or its virtual base) still assigns each instance attribute the transport reads."""
    sources = "".join(
        inspect.getsource(cls) for cls in kombu_redis.Channel.__mro__ if cls.__module__.startswith("kombu")
    )
    assert f"self.{name} =" in sources or f"self.{name}:" in sources


def test_our_channel_and_qos_subclass_kombus_redis_transport() -> None:
    """The transport replaces kombu's classes by subclassing them, so the checks above cover what it inherits."""
    assert issubclass(reliable_broker.Channel, kombu_redis.Channel)
    assert issubclass(reliable_broker.QoS, kombu_redis.QoS)
    assert issubclass(reliable_broker.Transport, kombu_redis.Transport)
