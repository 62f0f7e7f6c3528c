"""The pure parts of Kerberos support: SPN derivation, failure classification, token recognition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from config.settings import ProviderSettings
from emulator.listener.kerberos import KERBEROS_MECH_OIDS, is_kerberos_token
from errors import AuthError, ConfigError, ConnectError
from worker.provider import kerberos as worker_kerberos
from worker.provider.kerberos import KerberosTarget, classify_gss_error, kerberos_target

_SPNEGO_OID = bytes.fromhex("06062b0601050502")
_NTLM_OID = bytes.fromhex("060a2b0601040182370202 0a".replace(" ", ""))


class _GssFailureError(Exception):
    def __init__(self, minor: int, text: str = "") -> None:
        super().__init__(text)
        self.min_code = minor
        self._text = text

    def gen_message(self) -> str:
        return f"Major (851968): Unspecified GSS failure, Minor ({self.min_code}): {self._text}"


@pytest.mark.parametrize(
    ("endpoint", "spn", "expected"),
    [
        ("https://sccm01.corp.example:5986/wsman", None, KerberosTarget("HTTP", "sccm01.corp.example")),
        ("http://10.0.0.5:5985/wsman", "HTTP/sccm01.corp.example", KerberosTarget("HTTP", "sccm01.corp.example")),
        (
            "http://alias:5985/wsman",
            "HTTP/sccm01.corp.example@CORP.EXAMPLE",
            KerberosTarget("HTTP", "sccm01.corp.example"),
        ),
        ("http://[::1]:5985/wsman", None, KerberosTarget("HTTP", "::1")),
    ],
)
def test_the_spn_comes_from_the_override_or_the_endpoint_host(
    endpoint: str, spn: str | None, expected: KerberosTarget
) -> None:
    """The override wins (its realm dropped); otherwise HTTP/<host>, port and scheme ignored."""
    assert kerberos_target(endpoint, spn) == expected


@pytest.mark.parametrize(
    ("minor", "error_class", "fragment"),
    [
        (worker_kerberos.KRB5_KDC_UNREACH, ConnectError, "cannot reach a KDC"),
        (worker_kerberos.KDC_ERR_S_PRINCIPAL_UNKNOWN, ConfigError, "setspn"),
        (worker_kerberos.KRB_AP_ERR_SKEW, ConfigError, "NTP"),
        (worker_kerberos.KDC_ERR_C_PRINCIPAL_UNKNOWN, AuthError, "knows no account"),
        (worker_kerberos.KDC_ERR_PREAUTH_FAILED, AuthError, "wrong password"),
        (worker_kerberos.KDC_ERR_KEY_EXPIRED, AuthError, "expired"),
        (worker_kerberos.KDC_ERR_CLIENT_REVOKED, AuthError, "disabled or locked"),
        (worker_kerberos.KRB5_FCC_NOFILE, ConfigError, "keytab holds no key"),
        (12345, AuthError, "cannot get a ticket"),
    ],
)
def test_each_libkrb5_failure_gets_its_class_and_an_actionable_message(
    minor: int, error_class: type[Exception], fragment: str
) -> None:
    error = classify_gss_error(
        _GssFailureError(minor, "library words"), principal="svc@CORP.EXAMPLE", target=KerberosTarget("HTTP", "h")
    )
    assert type(error) is error_class
    assert fragment in error.message


def test_a_kdc_that_is_down_is_retryable_and_a_wrong_spn_is_not() -> None:
    down = classify_gss_error(_GssFailureError(worker_kerberos.KRB5_KDC_UNREACH), principal="p@R")
    wrong = classify_gss_error(_GssFailureError(worker_kerberos.KDC_ERR_S_PRINCIPAL_UNKNOWN), principal="p@R")
    assert down.retryable and not wrong.retryable


def _spnego_init(first_mech: bytes) -> bytes:
    def der(tag: int, content: bytes) -> bytes:
        return bytes((tag, len(content))) + content

    mech_list = der(0x30, first_mech + KERBEROS_MECH_OIDS[0])
    neg_token_init = der(0xA0, der(0x30, der(0xA0, mech_list)))
    return der(0x60, _SPNEGO_OID + neg_token_init)


def test_kerberos_first_tokens_are_recognised_raw_and_in_spnego() -> None:
    raw = bytes((0x60, 0x0D)) + KERBEROS_MECH_OIDS[0] + b"\x01\x00"
    assert is_kerberos_token(raw)
    assert is_kerberos_token(_spnego_init(KERBEROS_MECH_OIDS[1]))
    assert not is_kerberos_token(_spnego_init(_NTLM_OID))  # NTLM preferred: the NTLM acceptor's
    assert not is_kerberos_token(b"NTLMSSP\x00\x01\x00\x00\x00")


@given(st.binary(max_size=64))
def test_token_recognition_never_raises_on_garbage(token: bytes) -> None:
    assert is_kerberos_token(token) in (True, False)
    assert is_kerberos_token(b"\x60" + token) in (True, False)


def test_kerberos_settings_need_a_principal_and_a_key_source() -> None:
    endpoint = "https://sccm01.corp.example:5986/wsman"
    with pytest.raises(ValidationError, match="principal"):
        ProviderSettings(endpoint=endpoint, transport="kerberos", keytab_file="/k")
    with pytest.raises(ValidationError, match="keytab_file"):
        ProviderSettings(endpoint=endpoint, transport="kerberos", username="svc@CORP.EXAMPLE")
    with pytest.raises(ValidationError, match="for transport 'kerberos'"):
        ProviderSettings(endpoint=endpoint, transport="ntlm", username="u", password="p", keytab_file="/k")
    with pytest.raises(ValidationError, match="spn"):
        ProviderSettings(endpoint=endpoint, transport="kerberos", username="s@R", keytab_file="/k", spn="not an spn")
    ok = ProviderSettings(endpoint=endpoint, transport="kerberos", username="s@R", keytab_file="/k", spn="HTTP/h.r")
    assert ok.password is None and ok.spn == "HTTP/h.r"


_WITHOUT_THE_EXTRA = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("kerberos", "gssapi", "winkerberos"):
            raise ImportError("not installed: " + name)
sys.meta_path.insert(0, Block())
import cli.doctor, emulator.server, worker.app, worker.provider.classify
from config.settings import ProviderSettings
from emulator.server import Emulator
from emulator.settings import EmulatorSettings
from errors import ConfigError
from worker.provider.transport import ProviderTransport
settings = ProviderSettings(endpoint="http://localhost:1/wsman", transport="kerberos", username="a@B", keytab_file="/k")
try:
    ProviderTransport("PS1", settings).send(b"<x/>")
except ConfigError as exc:
    print("worker:", exc)
try:
    Emulator(EmulatorSettings(port=0, password="x", auth_modes=("kerberos",), kerberos_keytab="/k")).start()
except ValueError as exc:
    print("emulator:", exc)
"""


def test_without_the_kerberos_extra_everything_imports_and_kerberos_fails_clearly() -> None:
    """No gssapi, no pykerberos: the worker, emulator and CLI import; a Kerberos provider or listener
    is refused with a message naming the extra, never an ImportError traceback."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_EXTRA], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "worker: transport 'kerberos' needs the kerberos extra" in result.stdout
    assert "emulator: Kerberos needs the `kerberos` extra" in result.stdout
