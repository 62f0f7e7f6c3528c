"""Process-wide objects of a worker, created on first use and resettable in one place.

Nothing here is built at import time: a prefork child builds its own after the fork (objects
inherited through fork() would share sockets with the parent), and a test can reset
everything with `reset_runtime()`.
"""

from __future__ import annotations

import os
import socket
import threading

from config.settings import get_settings
from worker.constants import RedisKeys
from worker.delivery import DeliveryDeps
from worker.fence import RedisInvokeFences
from worker.outcome_writer import OutcomePublisher
from worker.redis_client import redis_from_url
from worker.sccm import SccmClient
from worker.transport import ProviderTransport

__all__ = ["client_for", "delivery_deps", "publisher", "reset_runtime", "worker_identity"]


class _Runtime:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clients: dict[str, SccmClient] = {}
        self.publisher: OutcomePublisher | None = None
        self.deps: DeliveryDeps | None = None
        self.pid = os.getpid()

    def check_fork(self) -> None:
        if self.pid != os.getpid():
            self.clients = {}
            self.publisher = None
            self.deps = None
            self.pid = os.getpid()


_runtime = _Runtime()


def client_for(site_code: str) -> SccmClient:
    """The SMS Provider client for a site (its transport keeps one WinRM session per thread)."""
    with _runtime.lock:
        _runtime.check_fork()
        client = _runtime.clients.get(site_code)
        if client is None:
            settings = get_settings()
            transport = ProviderTransport(site_code, settings.provider(site_code))
            client = SccmClient(transport, site_code, settings.retry.in_call)
            _runtime.clients[site_code] = client
        return client


def publisher() -> OutcomePublisher:
    with _runtime.lock:
        _runtime.check_fork()
        if _runtime.publisher is None:
            settings = get_settings()
            _runtime.publisher = OutcomePublisher(
                redis_from_url(settings.redis_url),
                RedisKeys(settings.key_prefix),
                stream_maxlen=settings.limits.stream_maxlen,
                final_marker_ttl_s=settings.limits.final_marker_ttl_s,
                retry_deadline_s=settings.limits.publish_deadline_s,
            )
        return _runtime.publisher


def delivery_deps(*, interruptions: tuple[type[BaseException], ...] = ()) -> DeliveryDeps:
    """The refresh use case's collaborators for this process (one Redis client shared with the writer)."""
    with _runtime.lock:
        _runtime.check_fork()
        if _runtime.deps is None:
            settings = get_settings()
            writer = publisher()
            fences = RedisInvokeFences(writer.redis, writer.keys, ttl_s=settings.limits.final_marker_ttl_s)
            _runtime.deps = DeliveryDeps(
                settings=settings,
                provider=client_for,
                finals=writer,
                fences=fences,
                worker=worker_identity(),
                interruptions=interruptions,
            )
        return _runtime.deps


def reset_runtime() -> None:
    with _runtime.lock:
        for client in _runtime.clients.values():
            client.transport.close()
        _runtime.clients = {}
        _runtime.publisher = None
        _runtime.deps = None


def worker_identity() -> str:
    """The "host:pid" an outcome names as its worker."""
    return f"{socket.gethostname()}:{os.getpid()}"
