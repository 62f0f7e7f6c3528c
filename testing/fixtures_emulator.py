"""Pytest fixtures: an in-process SMS Provider emulator on a free port, and pywinrm clients for it.

Module-scoped, one per listener flavour (cheap to share, so do not leave faults set on them):

* `emulator_basic_http`: Basic over plain HTTP with AllowUnencrypted.
* `emulator_basic_https`: Basic over HTTPS with a generated CA (`.ca_cert_path`).
* `emulator_ntlm`: NTLM with message encryption over plain HTTP (AllowUnencrypted off).

`FakeClock` drives the pure core (Provider, Catalogue) in unit tests. Function-scoped
`emulator_factory(**settings_overrides)` starts private emulators (stopped at
teardown) for tests that change faults, quotas or timeouts. `winrm_protocol(emulator)` builds
the matching pywinrm Protocol (transport, CA trust, no proxy lookup);
`emulator_admin_session` a requests session for their `/admin/` API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Literal, cast

import pytest
import requests
from winrm.protocol import Protocol

from emulator.server import Emulator
from emulator.settings import EmulatorSettings
from emulator.sms import Catalogue

__all__ = [
    "EMULATOR_PASSWORD",
    "EMULATOR_USERNAME",
    "EmulatorFactory",
    "FakeClock",
    "emulator_admin_session",
    "emulator_basic_http",
    "emulator_basic_https",
    "emulator_factory",
    "emulator_ntlm",
    "instance_properties",
    "make_emulator_settings",
    "winrm_protocol",
    "winrm_protocol_for_url",
]

EMULATOR_USERNAME = "LAB\\sccm-svc"
# A fixed test-only secret: every emulator in the test process registers the same NTLM user.
EMULATOR_PASSWORD = "Emulator-Test-Pa55word"  # noqa: S105 - test credential for a local emulator
_TEST_PACKAGES = 24
_READ_TIMEOUT_S = 10
_OPERATION_TIMEOUT_S = 5

EmulatorFactory = Callable[..., Emulator]


class FakeClock:
    """A monotonic and a wall clock that only move when told to (pure-logic tests of the emulator)."""

    def __init__(self, *, mono_s: float = 1_000.0, wall_s: float = 1_795_000_000.0) -> None:
        self.mono_s = mono_s
        self.wall_s = wall_s  # 2026-11-18, an arbitrary fixed "now"

    def monotonic(self) -> float:
        return self.mono_s

    def wall(self) -> float:
        return self.wall_s

    def advance(self, seconds: float) -> None:
        self.mono_s += seconds
        self.wall_s += seconds


def instance_properties(catalogue: Catalogue, package_id: str) -> dict[str, object]:
    """A package's current WMI properties, read through its own class (it must exist)."""
    class_name = catalogue.class_of(package_id)
    assert class_name is not None
    instance = catalogue.instance(class_name, package_id)
    assert instance is not None
    return dict(instance)


def make_emulator_settings(**overrides: Any) -> EmulatorSettings:
    """Test settings: loopback, port 0, the test credentials, a small catalogue; then `overrides`."""
    base = EmulatorSettings(
        host="127.0.0.1",
        port=0,
        username=EMULATOR_USERNAME,
        password=EMULATOR_PASSWORD,
        package_count=_TEST_PACKAGES,
        seed=7,
    )
    return replace(base, **overrides)


def winrm_protocol_for_url(
    url: str,
    *,
    transport: Literal["basic", "ntlm", "kerberos"] = "basic",
    username: str = EMULATOR_USERNAME,
    password: str = EMULATOR_PASSWORD,
    ca_cert_path: str | None = None,
    message_encryption: Literal["auto", "always", "never"] = "auto",
    read_timeout_s: int = _READ_TIMEOUT_S,
) -> Protocol:
    """An unmodified pywinrm Protocol for an endpoint URL (e.g. an emulator in a subprocess)."""
    return Protocol(
        url,
        transport=transport,
        username=username,
        password=password,
        server_cert_validation="validate",
        # None (plain HTTP) means "no extra CA" to pywinrm; its type hint omits that value.
        ca_trust_path=cast(str, ca_cert_path),
        read_timeout_sec=read_timeout_s,
        operation_timeout_sec=min(_OPERATION_TIMEOUT_S, read_timeout_s - 1),
        message_encryption=message_encryption,
        proxy=None,
    )


def winrm_protocol(
    emulator: Emulator,
    *,
    transport: Literal["basic", "ntlm", "kerberos"] | None = None,
    username: str = EMULATOR_USERNAME,
    password: str = EMULATOR_PASSWORD,
    message_encryption: Literal["auto", "always", "never"] = "auto",
    read_timeout_s: int = _READ_TIMEOUT_S,
) -> Protocol:
    """An unmodified pywinrm Protocol for `emulator` (its first auth mode unless `transport`)."""
    return winrm_protocol_for_url(
        emulator.url,
        transport=transport or emulator.settings.auth_modes[0],
        username=username,
        password=password,
        ca_cert_path=emulator.ca_cert_path,
        message_encryption=message_encryption,
        read_timeout_s=read_timeout_s,
    )


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    """Start private emulators with settings overrides; all are stopped after the test."""
    started: list[Emulator] = []

    def start(**overrides: Any) -> Emulator:
        emulator = Emulator(make_emulator_settings(**overrides)).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def emulator_admin_session() -> Iterator[requests.Session]:
    """A requests session carrying the test emulators' credentials, for their /admin/ API (HTTP Basic)."""
    with requests.Session() as session:
        session.trust_env = False
        session.auth = (EMULATOR_USERNAME, EMULATOR_PASSWORD)
        yield session


def _module_emulator(**overrides: Any) -> Iterator[Emulator]:
    with Emulator(make_emulator_settings(**overrides)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def emulator_basic_http() -> Iterator[Emulator]:
    """Basic over plain HTTP (AllowUnencrypted on)."""
    yield from _module_emulator(auth_modes=("basic",), allow_unencrypted=True)


@pytest.fixture(scope="module")
def emulator_basic_https() -> Iterator[Emulator]:
    """Basic over HTTPS with a generated CA (clients validate against `.ca_cert_path`)."""
    yield from _module_emulator(auth_modes=("basic",), tls="self-signed")


@pytest.fixture(scope="module")
def emulator_ntlm() -> Iterator[Emulator]:
    """NTLM with message encryption over plain HTTP (AllowUnencrypted off, as Windows defaults)."""
    yield from _module_emulator(auth_modes=("ntlm",))
