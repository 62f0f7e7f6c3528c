"""Pytest fixtures: a real MIT KDC with the worker's account and the emulator's SPNs (testing/kdc.py).

`kerberos_realm` (module scope) starts a KDC in its own realm and makes:

* the worker's account `sccm-svc@SCCM.TEST`, with a password (in `password_file`) and the same
  keys in `client_keytab`;
* the emulator's SPNs `HTTP/localhost` and `HTTP/sccm-emulator.sccm.test` in `service_keytab`,
  and `HTTP/other.sccm.test`, a real SPN whose keys the emulator does not hold.

`skewed_kerberos_realm` is the same on a KDC whose clock is 10 minutes behind.

Its environment (KRB5_CONFIG, ...) is set in this process while the module runs (the emulator's
acceptor runs here) and handed to worker processes. Tests skip, saying why, where the KDC or the
`kerberos` extra is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing.kdc import FAKETIME_MISSING, KDC_MISSING, MitKdc, find_faketime, find_kdc_binaries, kerberos_environment

__all__ = [
    "EMULATOR_SPN_HOST",
    "KERBEROS_ACCOUNT",
    "KERBEROS_PASSWORD",
    "KERBEROS_PRINCIPAL",
    "OTHER_SPN_HOST",
    "SKEW",
    "KerberosRealm",
    "kerberos_realm",
    "require_kerberos",
    "skewed_kerberos_realm",
]

KERBEROS_PRINCIPAL = "sccm-svc@SCCM.TEST"
# The same account as the emulator names it (NetBIOS domain form): the one with WMI rights.
KERBEROS_ACCOUNT = "SCCM\\sccm-svc"
KERBEROS_PASSWORD = "Kerberos-Test-Pa55word"  # noqa: S105 - test credential for a local KDC
EMULATOR_SPN_HOST = "sccm-emulator.sccm.test"
OTHER_SPN_HOST = "other.sccm.test"
SKEW = "-10m"  # twice the realm's allowed clock skew
_EXTRA_MISSING = "the kerberos extra is not installed (python-gssapi, pykerberos): install libkrb5-dev, then `make`"


def require_kerberos() -> None:
    """Skip the test, saying what to install, unless the KDC binaries and the extra are there."""
    if find_kdc_binaries() is None:
        pytest.skip(KDC_MISSING)
    try:
        import gssapi  # noqa: F401, PLC0415 - optional: probing for it is the point
        import kerberos  # noqa: F401, PLC0415
    except ImportError:
        pytest.skip(_EXTRA_MISSING)


@dataclass
class KerberosRealm:
    kdc: MitKdc
    principal: str
    password_file: Path
    client_keytab: Path
    service_keytab: Path

    @property
    def env(self) -> dict[str, str]:
        return self.kdc.environment()


def _make_realm(work: Path, *, clock_offset: str | None = None) -> KerberosRealm:
    kdc = MitKdc(work / "kdc", clock_offset=clock_offset).start()
    try:
        kdc.add_principal(KERBEROS_PRINCIPAL, password=KERBEROS_PASSWORD)
        for host in ("localhost", EMULATOR_SPN_HOST, OTHER_SPN_HOST):
            kdc.add_principal(f"HTTP/{host}")
        client_keytab = kdc.keytab(work / "sccm-svc.keytab", KERBEROS_PRINCIPAL)
        service_keytab = kdc.keytab(work / "http.keytab", "HTTP/localhost", f"HTTP/{EMULATOR_SPN_HOST}")
    except BaseException:
        kdc.stop()
        raise
    password_file = work / "sccm-svc.password"
    password_file.touch(mode=0o600)
    password_file.write_text(KERBEROS_PASSWORD, encoding="utf-8")
    return KerberosRealm(kdc, KERBEROS_PRINCIPAL, password_file, client_keytab, service_keytab)


@pytest.fixture(scope="module")
def kerberos_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KerberosRealm]:
    """The realm, its environment set in this process while the module runs."""
    require_kerberos()
    realm = _make_realm(tmp_path_factory.mktemp("kerberos"))
    try:
        with kerberos_environment(realm.env):
            yield realm
    finally:
        realm.kdc.stop()


@pytest.fixture(scope="module")
def skewed_kerberos_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KerberosRealm]:
    """The same accounts in a realm whose KDC runs 10 minutes behind (libfaketime): for worker
    processes (`.env`) and `kerberos_environment` blocks; nothing set in this process."""
    require_kerberos()
    if find_faketime() is None:
        pytest.skip(FAKETIME_MISSING)
    realm = _make_realm(tmp_path_factory.mktemp("kerberos-skewed"), clock_offset=SKEW)
    try:
        yield realm
    finally:
        realm.kdc.stop()
