"""The emulator's listener seen by an unmodified pywinrm client: auth modes, TLS, encryption, routing."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from requests.exceptions import SSLError
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError

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
