"""The emulator's lifecycle: `Emulator(settings).start()`, then `.url`; `.stop()` ends it cleanly.

One port serves `/wsman` (what pywinrm talks to) and `/admin/` (the JSON control API,
emulator.admin). This module is the one place that joins the layers: the listener
(emulator.listener), the SMS Provider (emulator.sms) and the WS-Man reading the listener needs
(emulator.wsman), with the fault plan, statistics, concurrency meter, NTLM accounts and TLS (a
generated CA or given files). It runs the listener in a background thread, and offers in-process
observation for tests: in-flight operations per user, the concurrency high-water mark, holding
operations in flight. Port 0 picks a free port; the CLI (emulator.cli) wraps the same object.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

from emulator.admin import ADMIN_PREFIX, AdminApi, ProviderApi
from emulator.concurrency import ConcurrencyMeter
from emulator.fault_injection import FaultPlan
from emulator.listener import (
    NTLM_USERS,
    SERVER_HEADER,
    WSMAN_PATH,
    Listener,
    ListenerServer,
    OperationGate,
    OperationQuota,
    TlsFiles,
    channel_binding_hash,
    generate_self_signed,
    quiet_handshake_logging,
    server_context,
)
from emulator.settings import EmulatorSettings
from emulator.sms import Provider
from emulator.stats import ServerStats
from emulator.wsman import operation_timeout_s

__all__ = ["SERVER_HEADER", "WSMAN_PATH", "Emulator", "OperationGate", "OperationQuota"]

log = logging.getLogger(__name__)

# One deadline for joining every thread in stop(): in-flight operations are woken by the stop
# event, so this only bounds a thread stuck in a socket call.
_STOP_JOIN_TIMEOUT_S: Final = 5.0
# How often serve_forever checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL_S: Final = 0.05


class Emulator:
    """An SMS Provider emulator listening on HTTP(S): `Emulator(settings).start()`, then `.url`."""

    def __init__(self, settings: EmulatorSettings, *, provider: ProviderApi | None = None) -> None:
        if not settings.password:
            raise ValueError("EmulatorSettings.password must be set (the CLI generates one when empty)")
        if not settings.auth_modes:
            raise ValueError("EmulatorSettings.auth_modes must name at least one of basic, ntlm, kerberos")
        if not settings.idle_timeout_s > 0:
            raise ValueError("EmulatorSettings.idle_timeout_s must be > 0")
        if settings.max_concurrent_operations_per_user < 1:
            raise ValueError("EmulatorSettings.max_concurrent_operations_per_user must be >= 1")
        self.settings = settings
        self.provider: ProviderApi = provider if provider is not None else Provider(settings)
        self.faults = FaultPlan.from_settings(settings)
        self.stats = ServerStats()
        self.concurrency = ConcurrencyMeter()
        self.ca_cert_path: str | None = None
        self._tls_dir: str | None = None
        self._server: ListenerServer | None = None
        self._thread: threading.Thread | None = None
        self._ntlm_registered: list[str] = []
        self._started_at = 0.0
        self._listener: Listener | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind, start serving in a background thread and return self."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        settings = self.settings
        quiet_handshake_logging()
        try:
            ssl_context, binding = self._tls_setup()
            if "ntlm" in settings.auth_modes:
                # Denied users authenticate with the same password; the provider refuses them WMI access.
                for user in (settings.username, *settings.denied_users):
                    NTLM_USERS.register(user, settings.password)
                    self._ntlm_registered.append(user)
            admin = AdminApi(
                provider=self.provider,
                faults=self.faults,
                stats=self.stats,
                concurrency=self.concurrency,
                describe=self.describe,
            )
            listener = Listener(
                settings=settings,
                provider=self.provider,
                faults=self.faults,
                stats=self.stats,
                concurrency=self.concurrency,
                admin=admin,
                tls_binding=binding,
                operation_timeout_s=operation_timeout_s,
            )
            self._server = ListenerServer((settings.host, settings.port), listener, ssl_context)
        except BaseException:
            self._cleanup()
            raise
        self._listener = listener
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name=f"emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, wake and close every connection, join the threads, remove generated files."""
        server, self._server = self._server, None
        if self._listener is not None:
            # Wake operations waiting out injected latency or a held gate: they answer nothing.
            self._listener.stopping.set()
            self._listener.gate.release()
            self._listener.auth.close()
        threads: list[threading.Thread] = []
        if server is not None:
            server.shutdown()
            server.server_close()
            threads = server.close_all_connections()
        if self._thread is not None:
            threads.append(self._thread)
            self._thread = None
        deadline_s = time.monotonic() + _STOP_JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(max(0.0, deadline_s - time.monotonic()))
        self._cleanup()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _tls_setup(self) -> tuple[ssl.SSLContext | None, bytes | None]:
        settings = self.settings
        if settings.tls == "off":
            return None, None
        if settings.tls == "files":
            if not settings.tls_cert_file or not settings.tls_key_file:
                raise ValueError("tls='files' needs tls_cert_file and tls_key_file")
            files = TlsFiles(cert_file=settings.tls_cert_file, key_file=settings.tls_key_file)
        else:
            self._tls_dir = tempfile.mkdtemp(prefix="sccm-emulator-tls-")
            files = generate_self_signed(self._tls_dir, self._certificate_names())
            self.ca_cert_path = files.ca_cert_file
        return server_context(files), channel_binding_hash(files.cert_file)

    def _certificate_names(self) -> list[str]:
        host = self.settings.host
        names = [] if host in ("0.0.0.0", "::", "") else [host]  # noqa: S104 - compared, not bound
        return [*names, "localhost", "127.0.0.1", "::1", self.settings.machine, socket.gethostname()]

    def _cleanup(self) -> None:
        while self._ntlm_registered:
            NTLM_USERS.unregister(self._ntlm_registered.pop())
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    # -- addresses and observation --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
            host = "localhost"
        if ":" in host:
            host = f"[{host}]"
        scheme = "http" if self.settings.tls == "off" else "https"
        return f"{scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The WS-Man endpoint (what pywinrm's Protocol takes)."""
        return self.base_url + WSMAN_PATH

    @property
    def admin_url(self) -> str:
        return self.base_url + ADMIN_PREFIX

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (served by GET /admin/health)."""
        settings = self.settings
        return {
            "endpoint": self.url if self.running else None,
            "site_code": settings.site_code,
            "machine": settings.machine,
            "auth_modes": list(settings.auth_modes),
            "tls": settings.tls,
            "allow_unencrypted": settings.allow_unencrypted,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self.running else 0.0,
            "in_flight": self._listener.quota.snapshot() if self._listener is not None else {},
        }

    def in_flight(self, user: str) -> int:
        """WS-Man operations of `user` currently being answered."""
        return self._running_listener().quota.in_flight(user)

    def wait_in_flight(self, user: str, count: int, timeout_s: float = 5.0) -> bool:
        """Block until `user` has `count` operations in flight (False on timeout)."""
        return self._running_listener().quota.wait_for(user, count, timeout_s)

    def wait_drained(self, user: str, timeout_s: float = 5.0) -> bool:
        """Block until `user` has no operation in flight (False on timeout)."""
        return self._running_listener().quota.wait_drained(user, timeout_s)

    @contextlib.contextmanager
    def hold_operations(self) -> Iterator[None]:
        """While the block runs, admitted operations wait in flight (quota tests without sleeps)."""
        gate = self._running_listener().gate
        gate.hold()
        try:
            yield
        finally:
            gate.release()

    def _running_listener(self) -> Listener:
        if self._listener is None:
            raise RuntimeError("emulator not started")
        return self._listener
