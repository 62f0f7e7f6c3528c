"""The emulator's listener seen by an unmodified pywinrm client: auth modes, TLS, encryption, routing."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import requests
import spnego
from requests.exceptions import SSLError
from winrm.encryption import Encryption
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError, WSManFaultError

from emulator.server import Emulator
from testing.fixtures_emulator import (
    EMULATOR_PASSWORD,
    EMULATOR_USERNAME,
    EmulatorFactory,
    winrm_protocol,
)
from testing.wsman_requests import get_envelope, invoke_envelope, relates_to, return_value

pytestmark = pytest.mark.integration

_MESSAGE_ID = "uuid:0F8A1B2C-1111-2222-3333-444455556666"
_DENIED_USER = "LAB\\no-rights"
_WMI_SVC_ACCESS_DENIED = 2150859012
_SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"


def _direct_package(emulator: Emulator) -> dict[str, Any]:
    """A STORAGE_DIRECT package (its refresh is accepted)."""
    return next(
        p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2 and p["class"] != "SMS_TaskSequencePackage"
    )


def _refresh(emulator: Emulator, **protocol_kwargs: Any) -> bytes:
    package = _direct_package(emulator)
    envelope = invoke_envelope(
        emulator.url,
        emulator.settings.site_code,
        package["PackageID"],
        class_name=package["class"],
        message_id=_MESSAGE_ID,
    )
    return winrm_protocol(emulator, **protocol_kwargs).send_message(envelope)


def test_basic_over_http_with_allow_unencrypted_refreshes(emulator_basic_http: Emulator) -> None:
    """Basic over plain HTTP (AllowUnencrypted) answers RefreshPkgSource with ReturnValue 0."""
    reply = _refresh(emulator_basic_http)
    assert return_value(reply) == 0
    assert relates_to(reply) == _MESSAGE_ID


def test_basic_over_https_validates_against_the_generated_ca(emulator_basic_https: Emulator) -> None:
    """Basic over HTTPS works with server_cert_validation=validate and the printed CA file."""
    assert emulator_basic_https.url.startswith("https://")
    assert emulator_basic_https.ca_cert_path is not None
    assert return_value(_refresh(emulator_basic_https)) == 0


def test_https_without_the_ca_fails_validation(emulator_basic_https: Emulator) -> None:
    """A client that does not trust the generated CA gets a TLS verification error."""
    protocol = winrm_protocol(emulator_basic_https)
    protocol.transport.ca_trust_path = None  # type: ignore[assignment]  # trust only system CAs
    with pytest.raises(SSLError):
        protocol.send_message(get_envelope(emulator_basic_https.url, "PS1", "PS100001"))


def test_ntlm_over_http_is_encrypted_on_the_wire(emulator_ntlm: Emulator) -> None:
    """With NTLM over HTTP every operation arrives as multipart/encrypted and is answered sealed."""
    before = emulator_ntlm.stats.snapshot()["counters"]
    protocol = winrm_protocol(emulator_ntlm)
    package = _direct_package(emulator_ntlm)
    envelope = invoke_envelope(
        emulator_ntlm.url, emulator_ntlm.settings.site_code, package["PackageID"], class_name=package["class"]
    )
    replies = [protocol.send_message(envelope) for _ in range(3)]
    after = emulator_ntlm.stats.snapshot()["counters"]
    assert [return_value(reply) for reply in replies] == [0, 0, 0]
    assert after.get("wsman_encrypted", 0) - before.get("wsman_encrypted", 0) == 3
    assert after.get("wsman_plaintext", 0) == before.get("wsman_plaintext", 0)
    assert after["empty_posts"] - before.get("empty_posts", 0) == 1  # the priming POST, once


def test_ntlm_plaintext_soap_over_http_is_refused(emulator_ntlm: Emulator) -> None:
    """NTLM without message encryption over HTTP is refused with 401, as WinRM does by default."""
    with pytest.raises(InvalidCredentialsError):
        _refresh(emulator_ntlm, message_encryption="never")


def test_basic_over_http_without_allow_unencrypted_is_refused(emulator_factory: EmulatorFactory) -> None:
    """Basic over plain HTTP is refused (401) when AllowUnencrypted is off."""
    emulator = emulator_factory(auth_modes=("basic", "ntlm"), allow_unencrypted=False)
    with pytest.raises(InvalidCredentialsError):
        _refresh(emulator, transport="basic")
    assert return_value(_refresh(emulator, transport="ntlm")) == 0


@pytest.mark.parametrize("fixture_name", ["emulator_basic_http", "emulator_basic_https", "emulator_ntlm"])
@pytest.mark.parametrize("username", [EMULATOR_USERNAME, "LAB\\nobody"])
def test_wrong_credentials_raise_invalid_credentials(
    fixture_name: str, username: str, request: pytest.FixtureRequest
) -> None:
    """A wrong password or an unknown user is a 401 -> InvalidCredentialsError in every auth mode."""
    emulator: Emulator = request.getfixturevalue(fixture_name)
    with pytest.raises(InvalidCredentialsError):
        _refresh(emulator, username=username, password="Not-The-Password-1")


def test_the_authenticated_user_reaches_the_provider(emulator_ntlm: Emulator) -> None:
    """The NTLM-authenticated account is the user the provider records for the call."""
    package = _direct_package(emulator_ntlm)
    _refresh(emulator_ntlm)
    events = emulator_ntlm.provider.call_log()["packages"][package["PackageID"]]["events"]
    assert events[-1]["user"].lower() == EMULATOR_USERNAME.lower()


def test_ntlm_over_https_binds_to_the_certificate(emulator_factory: EmulatorFactory) -> None:
    """NTLM over HTTPS (channel binding to the generated certificate, no message encryption) works."""
    emulator = emulator_factory(auth_modes=("ntlm",), tls="self-signed")
    assert return_value(_refresh(emulator)) == 0
    assert emulator.stats.count("wsman_plaintext") == 1


def test_encrypted_body_on_a_new_connection_is_a_400(emulator_ntlm: Emulator) -> None:
    """A sealed body on a connection without a security context gets HTTP 400 (WinRMTransportError)."""
    protocol = winrm_protocol(emulator_ntlm)
    package = _direct_package(emulator_ntlm)
    envelope = get_envelope(
        emulator_ntlm.url, emulator_ntlm.settings.site_code, package["PackageID"], class_name=package["class"]
    )
    protocol.send_message(envelope)
    session = protocol.transport.session
    assert session is not None
    # Drop the pooled (authenticated) connection: the next request opens a fresh one.
    session.get_adapter(emulator_ntlm.url).close()
    with pytest.raises(WinRMTransportError) as raised:
        protocol.send_message(envelope)
    assert raised.value.code == 400


def test_responses_look_like_httpsys_and_unknown_routes_are_404_or_405(emulator_basic_http: Emulator) -> None:
    """Every reply says Server: Microsoft-HTTPAPI/2.0; unknown paths 404; GET /wsman is 405."""
    with requests.Session() as session:
        session.trust_env = False
        unknown = session.get(emulator_basic_http.url.replace("/wsman", "/nowhere"), timeout=5)
        wrong_method = session.get(emulator_basic_http.url, timeout=5)
        challenge = session.post(emulator_basic_http.url, data=b"<x/>", timeout=5)
    assert unknown.status_code == 404
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert challenge.status_code == 401
    assert 'Basic realm="WSMAN"' in challenge.headers["WWW-Authenticate"]
    for response in (unknown, wrong_method, challenge):
        assert response.headers["Server"] == "Microsoft-HTTPAPI/2.0"


def test_ntlm_listener_advertises_negotiate(emulator_ntlm: Emulator) -> None:
    """An unauthenticated POST to an NTLM-only HTTP listener is challenged with Negotiate only."""
    response = requests.post(
        emulator_ntlm.url, data=b"", auth=None, timeout=5, headers={"Content-Type": "application/soap+xml"}
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Negotiate"


def test_basic_credentials_are_checked_on_https(emulator_basic_https: Emulator) -> None:
    """Basic over HTTPS with the right credentials is accepted by a plain requests client too."""
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override session.verify
        session.verify = emulator_basic_https.ca_cert_path or True
        session.auth = (EMULATOR_USERNAME, EMULATOR_PASSWORD)
        response = session.post(emulator_basic_https.url, data=b"", timeout=5)
    assert response.status_code == 200


# --------------------------------------------------------------------------- SPNEGO-wrapped NTLM


class _SpnegoSessionSecurity:
    """The `session_security` pywinrm's Encryption calls (requests-ntlm's shape) over a pyspnego context."""

    _SIGNATURE_BYTES = 16  # an NTLM signature ([MS-NLMP] 2.2.2.9)

    def __init__(self, context: spnego.ContextProxy) -> None:
        self._context = context

    def wrap(self, message: bytes) -> tuple[bytes, bytes]:
        wrapped = self._context.wrap(message, encrypt=True).data
        return wrapped[self._SIGNATURE_BYTES :], wrapped[: self._SIGNATURE_BYTES]

    def unwrap(self, sealed: bytes, signature: bytes) -> bytes:
        return self._context.unwrap(signature + sealed).data


class _ContextAuth(requests.auth.AuthBase):
    """Carries the established context for pywinrm's Encryption; adds no header itself."""

    def __init__(self, context: spnego.ContextProxy) -> None:
        self.session_security = _SpnegoSessionSecurity(context)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


def _negotiate_header(token: bytes) -> dict[str, str]:
    return {"Authorization": f"Negotiate {base64.b64encode(token).decode()}", "Content-Type": _SOAP_CONTENT_TYPE}


def _server_token(response: requests.Response) -> bytes:
    scheme, _, token = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Negotiate"
    return base64.b64decode(token)


def test_spnego_wrapped_ntlm_authenticates_and_exchanges_sealed_messages(emulator_ntlm: Emulator) -> None:
    """A pyspnego Negotiate client (NTLM inside SPNEGO, like pypsrp or Windows) authenticates and seals both ways."""
    context = spnego.client(EMULATOR_USERNAME, EMULATOR_PASSWORD, hostname="127.0.0.1", protocol="negotiate")
    first = context.step()
    assert first is not None and not first.startswith(b"NTLMSSP")  # a SPNEGO NegTokenInit, not raw NTLM
    package = _direct_package(emulator_ntlm)
    envelope = invoke_envelope(
        emulator_ntlm.url, "PS1", package["PackageID"], class_name=package["class"], message_id=_MESSAGE_ID
    )
    with requests.Session() as session:
        session.trust_env = False
        challenge = session.post(emulator_ntlm.url, data=b"", headers=_negotiate_header(first), timeout=5)
        assert challenge.status_code == 401
        authenticate = context.step(_server_token(challenge))
        assert authenticate is not None
        accepted = session.post(emulator_ntlm.url, data=b"", headers=_negotiate_header(authenticate), timeout=5)
        assert accepted.status_code == 200
        # SPNEGO's last leg: the server's accept-completed token (with its mechListMIC) completes the client.
        context.step(_server_token(accepted))
        assert context.complete
        session.auth = _ContextAuth(context)
        encryption = Encryption(session, "ntlm")
        response = session.send(encryption.prepare_encrypted_request(session, emulator_ntlm.url, envelope.encode()))
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("multipart/encrypted")
        reply = encryption.parse_encrypted_response(response)
    assert return_value(reply) == 0
    assert relates_to(reply) == _MESSAGE_ID


def test_spnego_with_a_wrong_password_is_refused(emulator_ntlm: Emulator) -> None:
    """The SPNEGO form checks the password too: a wrong one is a plain 401 challenge."""
    context = spnego.client(EMULATOR_USERNAME, "Not-The-Password-1", hostname="127.0.0.1", protocol="negotiate")
    with requests.Session() as session:
        session.trust_env = False
        challenge = session.post(
            emulator_ntlm.url, data=b"", headers=_negotiate_header(context.step() or b""), timeout=5
        )
        authenticate = context.step(_server_token(challenge)) or b""
        refused = session.post(emulator_ntlm.url, data=b"", headers=_negotiate_header(authenticate), timeout=5)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Negotiate"


# --------------------------------------------------------------------------- denied users and logging


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_a_denied_user_authenticates_but_gets_wmi_access_denied(
    transport: Literal["basic", "ntlm"], emulator_factory: EmulatorFactory
) -> None:
    """An account in denied_users passes Basic/NTLM with the emulator's password, then WMI refuses it."""
    emulator = emulator_factory(auth_modes=("basic", "ntlm"), allow_unencrypted=True, denied_users=(_DENIED_USER,))
    with pytest.raises(WSManFaultError) as raised:
        _refresh(emulator, transport=transport, username=_DENIED_USER)
    assert raised.value.fault_subcode == "w:AccessDenied"
    assert raised.value.wsman_fault_code == _WMI_SVC_ACCESS_DENIED
    assert emulator.stats.count("auth_failures") == 0
    with pytest.raises(InvalidCredentialsError):
        _refresh(emulator, transport=transport, username="LAB\\someone-else")
    assert return_value(_refresh(emulator, transport=transport)) == 0


@pytest.fixture
def spnego_logger_unset() -> Iterator[logging.Logger]:
    """pyspnego's logger at NOTSET (as a fresh process has it), restored afterwards."""
    logger = logging.getLogger("spnego")
    previous = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(previous)


def test_ntlm_tokens_are_not_logged_even_at_debug(
    emulator_factory: EmulatorFactory, spnego_logger_unset: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Starting an emulator raises the spnego logger to INFO: a DEBUG run logs no handshake token."""
    caplog.set_level(logging.DEBUG)
    emulator = emulator_factory(auth_modes=("ntlm",))
    assert spnego_logger_unset.level == logging.INFO
    assert return_value(_refresh(emulator)) == 0
    assert not [record for record in caplog.records if record.name.startswith("spnego")]
