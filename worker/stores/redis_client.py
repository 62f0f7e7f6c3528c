"""Build redis.Redis clients from a URL with settings that survive real networks.

Defaults of redis-py leave a dead peer undetected for as long as the kernel cares to wait;
here every socket has a timeout, TCP keepalive, an idle health check (PING before reuse)
and a short client-side retry on connection errors. Callers that need a longer, deadline-
bounded retry (the outcome publisher) wrap their calls in tenacity on top of this.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import EqualJitterBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
from redis.retry import Retry

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_HEALTH_CHECK_INTERVAL_S",
    "DEFAULT_SOCKET_TIMEOUT_S",
    "redacted_url",
    "redis_from_url",
]

DEFAULT_SOCKET_TIMEOUT_S = 5.0
DEFAULT_CONNECT_TIMEOUT_S = 3.0
# Below common idle timeouts of proxies/NAT (and Redis' own `timeout`), so a silently dropped
# pooled connection is found by a PING rather than by the next real command.
DEFAULT_HEALTH_CHECK_INTERVAL_S = 15
DEFAULT_RETRIES = 3
_RETRY_BACKOFF_BASE_S = 0.05
_RETRY_BACKOFF_CAP_S = 1.0
# Probe an idle connection after 30 s, every 10 s, give up after 3 misses (~1 minute).
_KEEPALIVE_IDLE_S = 30
_KEEPALIVE_INTERVAL_S = 10
_KEEPALIVE_COUNT = 3


def redis_from_url(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    health_check_interval_s: int = DEFAULT_HEALTH_CHECK_INTERVAL_S,
    retries: int = DEFAULT_RETRIES,
    decode_responses: bool = True,
    client_name: str | None = None,
) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://); creating it opens no connection."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        socket_keepalive_options=_keepalive_options(),
        health_check_interval=health_check_interval_s,
        retry=Retry(
            EqualJitterBackoff(cap=_RETRY_BACKOFF_CAP_S, base=_RETRY_BACKOFF_BASE_S),
            retries,
            supported_errors=(ConnectionError, TimeoutError, BusyLoadingError, socket.timeout),
        ),
        decode_responses=decode_responses,
        client_name=client_name,
    )


def redacted_url(url: str) -> str:
    """`url` without its password (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _keepalive_options() -> dict[int, int]:
    # The TCP_KEEP* constants are Linux names; elsewhere the OS defaults apply.
    wanted = {
        "TCP_KEEPIDLE": _KEEPALIVE_IDLE_S,
        "TCP_KEEPINTVL": _KEEPALIVE_INTERVAL_S,
        "TCP_KEEPCNT": _KEEPALIVE_COUNT,
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}
