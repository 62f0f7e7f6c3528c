"""Process-wide objects of a worker, created on first use and resettable in one place.

Nothing here is built at import time: a prefork child builds its own after the fork, and a
test can reset everything with `reset_runtime()`.
"""

from __future__ import annotations

import os
import socket
import threading

from config.settings import get_settings
from worker.constants import RedisKeys
from worker.publish import OutcomePublisher
from worker.redis_client import redis_from_url
from worker.sccm import SccmClient
from worker.transport import ProviderTransport

__all__ = ["client_for", "publisher", "reset_runtime", "worker_identity"]

_lock = threading.Lock()
_clients: dict[str, SccmClient] = {}
_publisher: OutcomePublisher | None = None
_pid: int | None = None


def _check_fork() -> None:
    """Objects inherited through fork() share sockets with the parent: drop them."""
    global _pid, _publisher
    if _pid != os.getpid():
        _clients.clear()
        _publisher = None
        _pid = os.getpid()


def client_for(site_code: str) -> SccmClient:
    """The SMS Provider client for a site (its transport keeps one WinRM session per thread)."""
    with _lock:
        _check_fork()
        client = _clients.get(site_code)
        if client is None:
            settings = get_settings()
            transport = ProviderTransport(site_code, settings.provider(site_code))
            client = SccmClient(transport, site_code, settings.retry.in_call)
            _clients[site_code] = client
        return client


def publisher() -> OutcomePublisher:
    global _publisher
    with _lock:
        _check_fork()
        if _publisher is None:
            settings = get_settings()
            _publisher = OutcomePublisher(
                redis_from_url(settings.redis_url),
                RedisKeys(settings.key_prefix),
                stream_maxlen=settings.limits.stream_maxlen,
                final_marker_ttl_s=settings.limits.final_marker_ttl_s,
                deadline_s=settings.limits.publish_deadline_s,
            )
        return _publisher


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def reset_runtime() -> None:
    global _publisher, _pid
    with _lock:
        for client in _clients.values():
            client.transport.close()
        _clients.clear()
        _publisher = None
        _pid = None
