"""Kerberos against a real MIT KDC: the emulator as acceptor, the worker's transport as client.

pywinrm's own Kerberos transport (unmodified) talks to the emulator's listener, with the worker's
in-process logon (worker/provider/kerberos.py) from a keytab or a password file, and message
encryption over plain HTTP. Refusals are checked on the wire, with the tokens a client sends.
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from cli.doctor_kerberos import check_kerberos_provider
from config.settings import ProviderSettings
from emulator.server import Emulator
from errors import AuthError, ConfigError, ConnectError
from testing.fixtures_emulator import EmulatorFactory
from testing.fixtures_kdc import EMULATOR_SPN_HOST, KERBEROS_ACCOUNT, OTHER_SPN_HOST, KerberosRealm
from testing.kdc import kerberos_environment
from testing.wsman_requests import get_envelope, relates_to
from worker.provider import kerberos as worker_kerberos
from worker.provider.transport import ProviderTransport

pytestmark = pytest.mark.integration

_MESSAGE_ID = "uuid:0F8A1B2C-2222-3333-4444-555566667777"


@pytest.fixture
def kerberos_emulator(kerberos_realm: KerberosRealm, emulator_factory: EmulatorFactory) -> Emulator:
    return emulator_factory(
        auth_modes=("kerberos",), kerberos_keytab=str(kerberos_realm.service_keytab), username=KERBEROS_ACCOUNT
    )


@pytest.fixture(autouse=True)
def _fresh_logon() -> Iterator[None]:
    """Each test logs on afresh (the process keeps one logon per account otherwise)."""
    worker_kerberos.forget_logons()
    yield
    worker_kerberos.forget_logons()


def _localhost_url(emulator: Emulator) -> str:
    return emulator.url.replace("127.0.0.1", "localhost")


def _transport(realm: KerberosRealm, endpoint: str, **fields: Any) -> ProviderTransport:
    settings: dict[str, Any] = {
        "endpoint": endpoint,
        "transport": "kerberos",
        "username": realm.principal,
        "keytab_file": realm.client_keytab,
        "operation_timeout_s": 5,
        "read_timeout_s": 8,
    }
    settings.update(fields)
    return ProviderTransport("PS1", ProviderSettings(**settings))


def _get(transport: ProviderTransport, emulator: Emulator) -> bytes:
    package = next(iter(emulator.provider.packages()))
    envelope = get_envelope(
        transport.endpoint, "PS1", package["PackageID"], class_name=package["class"], message_id=_MESSAGE_ID
    )
    return transport.send(envelope.encode())


@pytest.mark.parametrize("source", ["keytab", "password_file"])
def test_a_get_over_kerberos_with_message_encryption_is_answered(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator, source: str
) -> None:
    """From a keytab or a password file: the SPN HTTP/localhost from the URL, sealed both ways."""
    credentials: dict[str, Any] = (
        {} if source == "keytab" else {"keytab_file": None, "password_file": kerberos_realm.password_file}
    )
    transport = _transport(kerberos_realm, _localhost_url(kerberos_emulator), **credentials)
    try:
        for _ in range(3):  # one handshake, then the connection's context seals every request
            assert relates_to(_get(transport, kerberos_emulator)) == _MESSAGE_ID
    finally:
        transport.close()
    stats = kerberos_emulator.stats
    assert stats.count("kerberos_authenticated") == 1
    assert stats.count("wsman_encrypted") == 3 and stats.count("wsman_plaintext") == 0


def test_the_spn_override_names_the_ticket_asked_for(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator
) -> None:
    """An endpoint by IP address with spn=HTTP/<name>: the ticket is for the name."""
    transport = _transport(kerberos_realm, kerberos_emulator.url, spn=f"HTTP/{EMULATOR_SPN_HOST}")
    try:
        assert relates_to(_get(transport, kerberos_emulator)) == _MESSAGE_ID
    finally:
        transport.close()


def test_an_spn_unknown_to_the_kdc_is_a_config_error_naming_it(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator
) -> None:
    """A wrong SPN fails before any HTTP, permanent, saying which SPN and what to do."""
    transport = _transport(kerberos_realm, kerberos_emulator.url, spn="HTTP/nosuch.sccm.test")
    with pytest.raises(ConfigError, match=r"HTTP/nosuch\.sccm\.test.*setspn"):
        _get(transport, kerberos_emulator)
    assert kerberos_emulator.stats.count("http_401") == 0


def test_a_ticket_for_another_spn_is_refused_with_a_401(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator
) -> None:
    """A real SPN whose keys the emulator does not hold: the listener answers 401, an auth error."""
    transport = _transport(kerberos_realm, kerberos_emulator.url, spn=f"HTTP/{OTHER_SPN_HOST}")
    try:
        with pytest.raises(AuthError):
            _get(transport, kerberos_emulator)
    finally:
        transport.close()
    assert kerberos_emulator.stats.count("auth_kerberos_failures") >= 1


def test_an_unknown_account_and_a_wrong_password_fail_permanently_without_the_password(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator, tmp_path: Path
) -> None:
    """An account the keytab has no key for (config) and a wrong password (auth): no secret in the text."""
    wrong = tmp_path / "wrong"
    wrong.write_text("Not-The-Kerberos-Pa55word", encoding="utf-8")
    unknown = _transport(kerberos_realm, _localhost_url(kerberos_emulator), username="nobody@SCCM.TEST")
    with pytest.raises(ConfigError, match=r"keytab holds no key for nobody@SCCM\.TEST"):
        _get(unknown, kerberos_emulator)
    worker_kerberos.forget_logons()
    bad = _transport(kerberos_realm, _localhost_url(kerberos_emulator), keytab_file=None, password_file=wrong)
    with pytest.raises(AuthError, match="wrong password") as caught:
        _get(bad, kerberos_emulator)
    assert "Not-The-Kerberos" not in str(caught.value)


@pytest.mark.parametrize("source", ["keytab", "password_file"])
def test_clock_skew_against_the_kdc_is_a_config_error_saying_to_sync_the_clock(
    skewed_kerberos_realm: KerberosRealm, kerberos_emulator: Emulator, source: str
) -> None:
    """A KDC 10 minutes off: KRB_AP_ERR_SKEW, permanent (retrying does not set a clock), before any HTTP."""
    credentials: dict[str, Any] = (
        {"keytab_file": skewed_kerberos_realm.client_keytab}
        if source == "keytab"
        else {"keytab_file": None, "password_file": skewed_kerberos_realm.password_file}
    )
    with kerberos_environment(skewed_kerberos_realm.env):
        transport = _transport(skewed_kerberos_realm, _localhost_url(kerberos_emulator), **credentials)
        with pytest.raises(ConfigError, match=r"clock skew.*NTP"):
            _get(transport, kerberos_emulator)
    assert kerberos_emulator.stats.count("http_401") == 0


def test_a_stopped_kdc_is_transient_and_recovers_when_it_returns(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator
) -> None:
    """No KDC: a ConnectError (retried by the policy); the same transport works once it is back."""
    kerberos_realm.kdc.stop()
    try:
        transport = _transport(kerberos_realm, _localhost_url(kerberos_emulator))
        with pytest.raises(ConnectError, match="cannot reach a KDC"):
            _get(transport, kerberos_emulator)
    finally:
        kerberos_realm.kdc.start()
    try:
        assert relates_to(_get(transport, kerberos_emulator)) == _MESSAGE_ID
    finally:
        transport.close()


def test_a_replayed_authenticator_is_refused(kerberos_realm: KerberosRealm, kerberos_emulator: Emulator) -> None:
    """The same AP-REQ twice: the first authenticates, the replay gets 401 (libkrb5's replay cache)."""
    import gssapi  # noqa: PLC0415 - the kerberos extra (the realm fixture checked it)

    transport = _transport(kerberos_realm, _localhost_url(kerberos_emulator))
    transport.protocol()  # logs on, service ticket in the cache
    name = gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service)
    credentials = gssapi.Credentials(
        name=gssapi.Name(kerberos_realm.principal, gssapi.NameType.user),
        usage="initiate",
        store={"ccache": worker_kerberos.process_ccache()},
    )
    token = gssapi.SecurityContext(name=name, creds=credentials, usage="initiate").step()
    header = {"Authorization": f"Negotiate {base64.b64encode(token).decode()}", "Content-Length": "0"}
    first = requests.post(kerberos_emulator.url, headers=header, timeout=5)
    replay = requests.post(kerberos_emulator.url, headers=header, timeout=5)
    assert first.status_code == 200 and first.headers["WWW-Authenticate"].startswith("Negotiate ")
    assert replay.status_code == 401 and replay.headers["WWW-Authenticate"] == "Negotiate"
    transport.close()


@pytest.mark.parametrize(
    "token",
    [
        b"\x60\x03\x06\x01\x00",  # a GSS header with a truncated OID
        b"\x60\x0d\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01\x00",  # Kerberos OID, AP-REQ cut short
        b"\x60\x82\xff\xff" + b"\x00" * 16,  # a length far past the end
    ],
)
def test_a_hostile_negotiate_token_is_refused_without_a_traceback(
    kerberos_emulator: Emulator, token: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage in the Kerberos shape: a plain 401 challenge, nothing logged with a traceback."""
    header = {"Authorization": f"Negotiate {base64.b64encode(token).decode()}", "Content-Length": "0"}
    answer = requests.post(kerberos_emulator.url, headers=header, timeout=5)
    assert answer.status_code == 401
    assert "Traceback" not in caplog.text


class _HostileAcceptor(http.server.BaseHTTPRequestHandler):
    """Answers every POST 200 with the Negotiate token the test chose: the acceptor's leg is forged."""

    reply_token: ClassVar[str | None] = None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        if self.reply_token is not None:
            self.send_header("WWW-Authenticate", f"Negotiate {self.reply_token}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.mark.parametrize(
    "reply_token",
    [
        base64.b64encode(b"\x6f\x05garbage").decode(),  # an AP-REP tag over garbage
        base64.b64encode(b"\x00" * 64).decode(),
        None,  # no token at all: nothing proves the server holds the SPN's key
    ],
)
def test_a_hostile_acceptor_reply_is_refused_as_an_auth_error_without_a_traceback(
    kerberos_realm: KerberosRealm, reply_token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's leg does not verify (mutual authentication): AuthError, nothing logged with a traceback."""
    handler = type("Handler", (_HostileAcceptor,), {"reply_token": reply_token})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        transport = _transport(kerberos_realm, f"http://localhost:{server.server_address[1]}/wsman")
        with pytest.raises(AuthError, match="mutual authentication"):
            transport.send(b"<s:Envelope/>")
        transport.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert "Traceback" not in caplog.text


def _doctor_lines(realm: KerberosRealm, endpoint: str, **fields: Any) -> list[tuple[bool, str]]:
    lines: list[tuple[bool, str]] = []
    provider = _transport(realm, endpoint, **fields).provider
    check_kerberos_provider("PS1", provider, lambda ok, text: lines.append((ok, text)))
    return lines


def test_doctor_checks_the_logon_the_spn_ticket_and_an_authenticated_get(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator
) -> None:
    """A working provider: three ok lines, the Get answered (no such package) over Kerberos."""
    lines = _doctor_lines(kerberos_realm, _localhost_url(kerberos_emulator))
    assert [ok for ok, _ in lines] == [True, True, True], lines
    assert "HTTP/localhost" in lines[1][1] and "authenticated Get" in lines[2][1]
    assert kerberos_emulator.stats.count("kerberos_authenticated") == 1


def test_doctor_names_a_wrong_spn_and_stops_there(kerberos_realm: KerberosRealm, kerberos_emulator: Emulator) -> None:
    """An SPN the KDC does not know: one FAIL line naming it, no Get tried."""
    lines = _doctor_lines(kerberos_realm, kerberos_emulator.url, spn="HTTP/nosuch.sccm.test")
    assert len(lines) == 1 and not lines[0][0]
    assert "HTTP/nosuch.sccm.test" in lines[0][1] and "setspn" in lines[0][1]


def test_kerberos_over_https_validates_the_certificate_and_binds_the_channel(
    kerberos_realm: KerberosRealm, emulator_factory: EmulatorFactory
) -> None:
    """The production setting: HTTPS with CA validation; the AP-REQ carries channel bindings to the
    listener's certificate (RFC 5929), which the acceptor checks; no message encryption on top."""
    emulator = emulator_factory(
        auth_modes=("kerberos",),
        kerberos_keytab=str(kerberos_realm.service_keytab),
        username=KERBEROS_ACCOUNT,
        tls="self-signed",
    )
    transport = _transport(kerberos_realm, _localhost_url(emulator), ca_trust_path=emulator.ca_cert_path)
    try:
        assert relates_to(_get(transport, emulator)) == _MESSAGE_ID
    finally:
        transport.close()
    assert emulator.stats.count("kerberos_authenticated") == 1
    assert emulator.stats.count("wsman_plaintext") == 1 and emulator.stats.count("wsman_encrypted") == 0
    # An authenticator bound to another certificate (a man in the middle's) is refused.
    import gssapi  # noqa: PLC0415 - the kerberos extra (the realm fixture checked it)

    credentials = gssapi.Credentials(
        name=gssapi.Name(kerberos_realm.principal, gssapi.NameType.user),
        usage="initiate",
        store={"ccache": worker_kerberos.process_ccache()},
    )
    elsewhere = gssapi.raw.ChannelBindings(application_data=b"tls-server-end-point:" + b"\x00" * 32)
    token = gssapi.SecurityContext(
        name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service),
        creds=credentials,
        usage="initiate",
        channel_bindings=elsewhere,
    ).step()
    header = {"Authorization": f"Negotiate {base64.b64encode(token).decode()}", "Content-Length": "0"}
    answer = requests.post(_localhost_url(emulator), headers=header, timeout=5, verify=emulator.ca_cert_path)
    assert answer.status_code == 401


def test_a_refused_logon_is_not_retried_against_the_kdc_until_the_password_file_changes(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator, tmp_path: Path
) -> None:
    """A wrong password: the same AuthError again without asking the KDC (each try would count towards
    the account's lockout); a corrected password file is tried at once."""
    password_file = tmp_path / "password"
    password_file.write_text("Not-The-Kerberos-Pa55word", encoding="utf-8")
    transport = _transport(
        kerberos_realm, _localhost_url(kerberos_emulator), keytab_file=None, password_file=password_file
    )
    with pytest.raises(AuthError, match="wrong password"):
        _get(transport, kerberos_emulator)
    kerberos_realm.kdc.stop()  # a second logon attempt would now be a ConnectError
    try:
        with pytest.raises(AuthError, match="wrong password"):
            _get(transport, kerberos_emulator)
    finally:
        kerberos_realm.kdc.start()
    password_file.write_text(kerberos_realm.password_file.read_text(encoding="utf-8"), encoding="utf-8")
    try:
        assert relates_to(_get(transport, kerberos_emulator)) == _MESSAGE_ID
    finally:
        transport.close()


def test_kerberos_inside_spnego_is_accepted_as_windows_clients_send_it(
    kerberos_realm: KerberosRealm, kerberos_emulator: Emulator
) -> None:
    """SPNEGO offering Kerberos (as pypsrp and Windows' own client send it, through MIT's SPNEGO
    mechanism here): authenticated in one leg; the listener's SPNEGO answer completes the client."""
    import gssapi  # noqa: PLC0415 - the kerberos extra (the realm fixture checked it)

    transport = _transport(kerberos_realm, _localhost_url(kerberos_emulator))
    transport.protocol()  # logs on: the process's cache holds the tickets
    credentials = gssapi.Credentials(
        name=gssapi.Name(kerberos_realm.principal, gssapi.NameType.user),
        usage="initiate",
        store={"ccache": worker_kerberos.process_ccache()},
    )
    client = gssapi.SecurityContext(
        name=gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service),
        creds=credentials,
        usage="initiate",
        mech=gssapi.OID.from_int_seq("1.3.6.1.5.5.2"),
        flags=gssapi.RequirementFlag.mutual_authentication,
    )
    token = client.step()
    assert token[:1] == b"\x60" and bytes.fromhex("06062b0601050502") in token[:20]  # SPNEGO
    header = {"Authorization": f"Negotiate {base64.b64encode(token).decode()}", "Content-Length": "0"}
    answer = requests.post(kerberos_emulator.url, headers=header, timeout=5)
    assert answer.status_code == 200
    scheme, _, reply = answer.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Negotiate"
    client.step(base64.b64decode(reply))
    assert client.complete
    assert kerberos_emulator.stats.count("kerberos_authenticated") == 1
    transport.close()
