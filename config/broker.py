"""Which brokers sccm-refresh can run on without losing a message, and why the others are refused.

The workers take messages through their own Redis transport (worker/broker/transport.py): a
message is moved into an in-flight list, never popped, so a worker killed while taking one cannot
lose it. kombu only hands that transport plain TCP Redis URLs. Anything else would silently take
kombu's own Redis paths, which pop with BRPOP and lose the message a worker dies holding:

* `sentinel://` (kombu's Sentinel transport), and
* a Unix socket (`redis+socket://`, `socket://`, `unix://`: kombu's socket parsing);
* a global key prefix (the `global_keyprefix` transport option): kombu rewrites its own commands
  for it, not the ones the in-flight transport sends, so the channel would have to fall back.

They are refused at start (settings validation, and the worker's start for transport options
set in code) with the reason and what to use instead.

RabbitMQ (`amqp://`) is planned as a second broker. It needs no in-flight lists (RabbitMQ keeps an
unacked message with its channel and redelivers it when the channel closes), so it would be an
accepted scheme of its own mapped to Celery's py-amqp transport (worker/app.py chooses the transport
by scheme), and the places that read the broker's Redis directly would skip or replace their Redis
reads for it: the API's direct LPUSH publishing and /readyz's broker check, the misrouting watch.
Until then it is refused like any other scheme.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["REDIS_SCHEMES", "broker_url_problem", "same_redis", "transport_options_problem"]

# Schemes the in-flight Redis transport is used for (worker/app.py sets it for exactly these).
REDIS_SCHEMES: Final = frozenset({"redis", "rediss"})
_SOCKET_SCHEMES: Final = frozenset({"redis+socket", "socket", "unix"})
_SENTINEL_SCHEMES: Final = frozenset({"sentinel", "redis+sentinel"})
_LOSSY: Final = "kombu would take messages with BRPOP, and a worker killed while taking one would lose it"


def broker_url_problem(url: str) -> str | None:
    """Why `url` cannot be the broker (one line, no password), or None when it can.

    A kombu failover list (`redis://a;redis://b`) is checked part by part.
    """
    for part in url.split(";"):
        scheme = urlsplit(part.strip()).scheme.lower()
        if scheme in REDIS_SCHEMES:
            continue
        if scheme in _SENTINEL_SCHEMES:
            return (
                f"{scheme}:// is not supported: {_LOSSY}; point it at a redis:// address that always reaches "
                "the master (a proxy checking role:master, or the platform's failover address; docs/operations.md)"
            )
        if scheme in _SOCKET_SCHEMES:
            return f"a Unix socket ({scheme}://) is not supported: {_LOSSY}; use redis://host:port"
        shown = scheme or "none"
        return f"scheme {shown!r} is not supported: the broker is Redis, redis:// or rediss:// (TLS)"
    return None


def transport_options_problem(options: Mapping[str, Any]) -> str | None:
    """Why these broker transport options cannot be used, or None."""
    if options.get("global_keyprefix"):
        return (
            f"the broker transport option global_keyprefix is not supported: {_LOSSY}; keep queues apart with "
            "SCCM_REFRESH_QUEUE and SCCM_REFRESH_KEY_PREFIX, or a Redis database of their own (redis://host:port/N)"
        )
    return None


def same_redis(broker_url: str, redis_url: str) -> bool:
    """Whether the broker's queues live in the outcome Redis's database (same host, port and db).

    Then a Lua script of the stores can put a message back on its queue itself (a parked request
    woken by a release, worker/stores/slots.py); otherwise the worker publishes it.
    """
    broker = _redis_location(broker_url)
    return broker is not None and broker == _redis_location(redis_url)


def _redis_location(url: str) -> tuple[str, int, int] | None:
    if ";" in url:
        return None  # a failover list: which one is live is kombu's to say
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in REDIS_SCHEMES:
        return None
    try:
        port = parts.port or 6379
        db_text = parts.path.strip("/") or "0"
        db = int(db_text)
    except ValueError:
        return None
    host = (parts.hostname or "localhost").lower()
    if host in {"localhost", "::1"}:
        host = "127.0.0.1"
    return host, port, db
