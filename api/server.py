"""Run the API under uvicorn: auth mode checks, the listening socket, logging without secrets."""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any, Final

import uvicorn

from api.app import create_app
from api.connection_guard import ConnectionLimits, guarded_protocol
from api.middleware import ACCESS_LOGGER, ERROR_LOGGER
from api.token_file import TOKEN_FILE_LOGGER, TokenFile
from config.settings import ApiSettings, Settings
from errors import ConfigError

__all__ = [
    "HEALTH_PATHS",
    "LISTENING_PREFIX",
    "connection_limits",
    "is_loopback",
    "listen",
    "log_config",
    "run",
    "serve",
    "token_store",
    "url_of",
]

# Printed once the socket listens (tests and scripts read the port from it when it was 0).
LISTENING_PREFIX: Final = "sccm-refresh api: listening on "
_GRACEFUL_SHUTDOWN_S: Final = 5
_LOCALHOST: Final = "localhost"
# Answered however many requests are in flight: probes must tell "busy" from "down".
HEALTH_PATHS: Final = frozenset({"/healthz", "/readyz"})


def is_loopback(host: str) -> bool:
    if host == _LOCALHOST:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_store(api: ApiSettings, *, insecure_no_auth: bool) -> TokenFile | None:
    """The loaded tokens, or None for --insecure-no-auth (allowed on loopback only)."""
    if insecure_no_auth:
        if not is_loopback(api.host):
            raise ConfigError("--insecure-no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost)")
        return None
    if api.token_file is None:
        raise ConfigError(
            "refusing to start without a token file: set SCCM_REFRESH_API__TOKEN_FILE or --token-file "
            "(or --insecure-no-auth on a loopback address)"
        )
    return TokenFile(api.token_file, check_interval_s=api.token_reload_s)


def log_config(level: str) -> dict[str, Any]:
    """stderr logging; uvicorn's access log off (ours logs the route template, not the URL)."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            ACCESS_LOGGER: {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            ERROR_LOGGER: {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            TOKEN_FILE_LOGGER: {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one); ConfigError when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def connection_limits(api: ApiSettings) -> ConnectionLimits:
    """What the server's protocol enforces against slow and oversized clients (api/connection_guard.py)."""
    return ConnectionLimits(
        max_in_flight=api.max_connections,
        max_per_client=api.max_connections_per_client,
        header_timeout_s=api.header_timeout_s,
        body_timeout_s=api.body_timeout_s,
        max_header_bytes=api.max_header_bytes,
        max_headers=api.max_headers,
        exempt_paths=HEALTH_PATHS,
    )


def run(app: Any, sock: socket.socket, *, log_level: str, limits: ConnectionLimits) -> None:
    """Serve `app` on `sock` until SIGINT/SIGTERM (the settings the benchmark's baseline shares)."""
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        ws="none",
        log_config=log_config(log_level),
        access_log=False,
        server_header=False,
        proxy_headers=False,
        # The guarded protocol caps requests in flight itself (uvicorn's cap counts connections).
        limit_concurrency=None,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    print(f"{LISTENING_PREFIX}{url_of(sock)}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def serve(settings: Settings, *, insecure_no_auth: bool = False) -> int:
    """Serve until SIGINT/SIGTERM; ConfigError for a bad auth setup (before binding anything)."""
    api = settings.api
    tokens = token_store(api, insecure_no_auth=insecure_no_auth)
    sock = listen(api.host, api.port)
    app = create_app(settings, tokens=tokens)
    if tokens is None:
        print("sccm-refresh api: WARNING: authentication is OFF (--insecure-no-auth)", file=sys.stderr, flush=True)
    run(app, sock, log_level=settings.log_level, limits=connection_limits(api))
    return 0
