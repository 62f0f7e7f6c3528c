"""Flower's settings and credentials, apart from Flower itself.

The CLI parses and checks them for every `sccm-refresh` command's `--help`, so this module imports
neither Flower nor Tornado: they come with the `monitor` extra, and only `sccm-refresh flower`
(ops/flower_app.py) loads them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "BASIC_AUTH_FILE_ENV",
    "FlowerConfig",
    "FlowerConfigError",
    "is_loopback",
    "load_credentials",
    "resolve_credentials",
]

BASIC_AUTH_FILE_ENV: Final = "SCCM_REFRESH_FLOWER_BASIC_AUTH_FILE"
_MAX_CREDENTIAL_FILE_BYTES: Final = 64 * 1024
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class FlowerConfigError(ValueError):
    """Flower cannot start as configured (message is safe to print: never a password)."""


@dataclass(frozen=True)
class FlowerConfig:
    address: str = "127.0.0.1"
    port: int = 5555
    credentials: tuple[str, ...] = ()
    max_tasks: int = 10_000
    url_prefix: str = ""
    xheaders: bool = False
    read_only: bool = False
    purge_offline_workers_s: int | None = None


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; an empty address means every interface."""
    if address.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def load_credentials(path: Path) -> tuple[str, ...]:
    """`user:password` lines of `path` (blank lines and `#` comments skipped)."""
    try:
        if path.stat().st_size > _MAX_CREDENTIAL_FILE_BYTES:
            raise FlowerConfigError(f"basic-auth file {str(path)!r} is larger than 64 KiB")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowerConfigError(f"cannot read basic-auth file {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise FlowerConfigError(f"basic-auth file {str(path)!r} is not UTF-8") from None
    credentials: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            # Name the line, never its content: it may hold a password.
            raise FlowerConfigError(f"basic-auth file {str(path)!r}, line {number}: expected user:password")
        credentials.append(line)
    if not credentials:
        raise FlowerConfigError(f"basic-auth file {str(path)!r} holds no user:password line")
    return tuple(credentials)


def resolve_credentials(
    *, basic_auth_file: Path | None, insecure_no_auth: bool, address: str, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The logins Flower accepts; () only when running without auth was asked for on loopback."""
    environ = os.environ if environ is None else environ
    path = basic_auth_file or (Path(environ[BASIC_AUTH_FILE_ENV]) if environ.get(BASIC_AUTH_FILE_ENV) else None)
    if path is not None:
        if insecure_no_auth:
            raise FlowerConfigError("--insecure-no-auth and a basic-auth file exclude each other")
        return load_credentials(path)
    if not insecure_no_auth:
        raise FlowerConfigError(
            f"Flower needs credentials: --basic-auth-file FILE (or {BASIC_AUTH_FILE_ENV}) with user:password "
            "lines; --insecure-no-auth only on a loopback address"
        )
    if not is_loopback(address):
        raise FlowerConfigError(f"--insecure-no-auth is refused on {address or 'every interface'!r}: bind to 127.0.0.1")
    return ()
