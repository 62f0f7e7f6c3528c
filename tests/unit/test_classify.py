"""Unit tests of exception classification and refresh outcomes (worker.provider.classify).

pywinrm's exceptions are produced by the real, unmodified pywinrm: its Protocol sends through
a requests adapter that answers with canned HTTP replies (the saved Windows captures), so
the exception objects, attributes and texts are exactly what the worker will see.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import requests
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from errors import (
    AccessDeniedError,
    AuthError,
    ConfigError,
    ConnectError,
    InvalidRequestError,
    MediumNotReadyError,
    NotFoundError,
    OperationTimeoutError,
    ProtocolError,
    ProviderFailureError,
    QuotaError,
    RefreshError,
    ServerBusyError,
)
from testing.canned_http import CannedAdapter
from worker.domain.packages import STORAGE_COMPRESS
from worker.domain.refresh_answer import error_for_medium_fault, refresh_outcome
from worker.provider.classify import (
    WBEM_E_FAILED,
    WBEM_E_PROVIDER_FAILURE,
    WSMAN_TIMED_OUT,
    HttpErrorReply,
    classify_exception,
    http_error_reply,
    sanitize_text,
)
from worker.wsman import ExtendedStatus, build_get

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"
ENDPOINT = "http://sccm01.lab.local:5985/wsman"
PASSWORD = "Sup3r$ecret!pw"


def _canned_protocol(status: int, body: bytes) -> Protocol:
    """An unmodified pywinrm Protocol whose every request is answered `status` + `body`."""
    protocol = Protocol(
        endpoint=ENDPOINT,
        transport="plaintext",
        username="LAB\\svc-sccm",
        password=PASSWORD,
        message_encryption="never",
        server_cert_validation="ignore",
        proxy=None,
    )
    protocol.transport.build_session().mount("http://", CannedAdapter(body, status))
    return protocol


def _raised_by_pywinrm(status: int, body: bytes = b"", *, via_transport: bool = False) -> Exception:
    """What pywinrm's Protocol.send_message (or, `via_transport`, the transport object the worker
    calls) raises when the server answers `status` + `body`."""
    protocol = _canned_protocol(status, body)
    envelope = build_get(to_url=ENDPOINT, resource_uri="urn:x", selectors={}, operation_timeout_s=5)
    with pytest.raises(Exception) as caught:
        if via_transport:
            protocol.transport.send_message(envelope.xml)
        else:
            protocol.send_message(envelope.text)
    assert isinstance(caught.value, Exception)
    return caught.value


@pytest.mark.parametrize(
    ("capture", "pywinrm_type", "error_class"),
    [
        ("pywinrm_timed_out.xml", WinRMOperationTimeoutError, OperationTimeoutError),
        ("omi_wmi_not_found.xml", WSManFaultError, NotFoundError),
        ("client_winrb_wmi_class_not_found.xml", WSManFaultError, InvalidRequestError),
        ("pypsrp_invalid_selectors.xml", WSManFaultError, InvalidRequestError),
        ("winrb_quota_shells.xml", WSManFaultError, QuotaError),
        ("pywinrm_quota_operations.xml", WSManFaultError, QuotaError),
        ("client_omi_provider_fault_text.xml", WSManFaultError, ProviderFailureError),
    ],
)
def test_pywinrm_fault_exceptions_map_to_the_fault_meaning(
    capture: str, pywinrm_type: type[Exception], error_class: type[RefreshError]
) -> None:
    """A SOAP fault answered with HTTP 500 becomes the error its XML means, via pywinrm's own exception."""
    raised = _raised_by_pywinrm(500, (CAPTURES / capture).read_bytes())

    assert type(raised) is pywinrm_type
    error = classify_exception(raised)
    assert type(error) is error_class
    assert error is not None and error.http_status == 500


def test_pywinrm_timeout_keeps_the_wsman_timeout_code() -> None:
    """WinRMOperationTimeoutError carries no details; the error still names 2150858793."""
    error = classify_exception(_raised_by_pywinrm(500, (CAPTURES / "pywinrm_timed_out.xml").read_bytes()))

    assert isinstance(error, OperationTimeoutError)
    assert error.wsman_code == WSMAN_TIMED_OUT and error.retryable


def test_wmi_provider_fault_details_survive_classification() -> None:
    """The ProviderFault's extended status, which pywinrm drops, is recovered from `.response`."""
    error = classify_exception(
        _raised_by_pywinrm(500, (CAPTURES / "client_winrb_wmi_class_not_found.xml").read_bytes())
    )

    assert error is not None and error.extended_status is not None
    assert error.extended_status.operation == "ExecQuery"
    assert "The specified class does not exist" in error.message


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [
        (401, b"", AuthError),
        (400, b"", ConnectError),
        (503, b"<html>Service Unavailable</html>", ServerBusyError),
        (500, b"", ProviderFailureError),
        (500, b"Internal Server Error", ProviderFailureError),
        (502, b"", ProviderFailureError),
        (404, b"", InvalidRequestError),
        (405, b"", InvalidRequestError),
        (413, b"", InvalidRequestError),
        (429, b"", ServerBusyError),
        (408, b"", OperationTimeoutError),
        (418, b"", InvalidRequestError),
    ],
)
def test_http_statuses_without_a_fault_map_by_status(status: int, body: bytes, error_class: type[RefreshError]) -> None:
    """Non-fault HTTP errors raised by pywinrm map by status: 400 is a stale session, 503 busy."""
    error = classify_exception(_raised_by_pywinrm(status, body))

    assert type(error) is error_class
    assert error is not None and error.http_status == status


def test_stale_session_http_400_is_transient() -> None:
    """HTTP 400 (HTTP.sys closed the idle encrypted session) is retryable after a reset."""
    raised = _raised_by_pywinrm(400)

    assert isinstance(raised, WinRMTransportError)
    error = classify_exception(raised)
    assert isinstance(error, ConnectError) and error.retryable


def test_invalid_credentials_are_permanent() -> None:
    """pywinrm's InvalidCredentialsError (HTTP 401) is an AuthError, never retried."""
    raised = _raised_by_pywinrm(401)

    assert isinstance(raised, InvalidCredentialsError)
    error = classify_exception(raised)
    assert isinstance(error, AuthError) and not error.retryable


def test_wsman_fault_error_with_unparseable_response_uses_its_attributes() -> None:
    """When `.response` is not XML, pywinrm's parsed attributes decide."""
    raised = WSManFaultError(
        code=500,
        message="Bad HTTP response returned from server. Code 500",
        response="<not xml",
        reason="quota",
        fault_code="s:Sender",
        fault_subcode="w:QuotaLimit",
        wsman_fault_code=None,
        wmierror_code=None,
    )

    error = classify_exception(raised)

    assert isinstance(error, QuotaError)
    assert error.http_status == 500


def test_transport_error_carrying_a_fault_is_read_as_the_fault() -> None:
    """A WinRMTransportError whose text is a SOAP fault maps by the fault, not the status."""
    body = (CAPTURES / "omi_wmi_not_found.xml").read_text()

    assert isinstance(classify_exception(WinRMTransportError("http", 500, body)), NotFoundError)


@pytest.mark.parametrize(
    ("text", "error_class"),
    [
        (
            "Encrypted length from server does not match the expected size, message has been tampered with",
            ProtocolError,
        ),
        ("requested auth method is ntlm, but requests_ntlm is not installed", ConfigError),
    ],
)
def test_plain_winrm_errors_split_into_integrity_and_settings(text: str, error_class: type[RefreshError]) -> None:
    """A tampered encrypted reply is a ProtocolError; other plain WinRMErrors are settings problems."""
    assert type(classify_exception(WinRMError(text))) is error_class


# --- requests / urllib3 / sockets ------------------------------------------------------


def _cert_failure() -> requests.exceptions.SSLError:
    """requests' SSLError wrapping urllib3's, the way a self-signed certificate surfaces."""
    cause = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"
    )
    inner = urllib3.exceptions.SSLError(cause)
    retry = MaxRetryError(None, "/wsman", reason=inner)  # type: ignore[arg-type]  # pool is optional at runtime
    return requests.exceptions.SSLError(retry)


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (requests.exceptions.ConnectionError("Connection aborted. RemoteDisconnected"), ConnectError),
        (requests.exceptions.ConnectTimeout("connect timeout=5"), ConnectError),
        (requests.exceptions.ReadTimeout("Read timed out. (read timeout=30)"), OperationTimeoutError),
        (requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"), ConnectError),
        (requests.exceptions.SSLError("EOF occurred in violation of protocol (_ssl.c:2427)"), ConnectError),
        (_cert_failure(), ConfigError),
        (requests.exceptions.InvalidURL("Failed to parse: http://[::1"), ConfigError),
        (requests.exceptions.MissingSchema("Invalid URL 'sccm01/wsman'"), ConfigError),
        (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")), ConnectError),
        (ReadTimeoutError(None, "/wsman", "Read timed out."), OperationTimeoutError),  # type: ignore[arg-type]
        (NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused"), ConnectError),  # type: ignore[arg-type]
        (ConnectionResetError(104, "Connection reset by peer"), ConnectError),
        (ConnectionRefusedError(111, "Connection refused"), ConnectError),
        (TimeoutError("timed out"), OperationTimeoutError),
        (socket.gaierror(-2, "Name or service not known"), ConnectError),
        (ssl.SSLCertVerificationError(1, "certificate verify failed: Hostname mismatch"), ConfigError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.__name__,
)
def test_network_exceptions_map_by_meaning(exc: BaseException, error_class: type[RefreshError]) -> None:
    """requests, urllib3 and socket exceptions map to connect / timeout / config errors."""
    assert type(classify_exception(exc)) is error_class


def test_refresh_errors_pass_through_unchanged() -> None:
    """An error that already is a RefreshError is returned as is."""
    original = NotFoundError("gone")

    assert classify_exception(original) is original


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("x"), RuntimeError("x"), FileNotFoundError("cert.pem")])
def test_unknown_exceptions_are_not_swallowed(exc: BaseException) -> None:
    """Exceptions that are not transport/protocol failures are left unclassified (None)."""
    assert classify_exception(exc) is None


# --- no credentials in messages --------------------------------------------------------


def test_urls_with_credentials_are_stripped_from_messages() -> None:
    """Userinfo in URLs and Authorization values never reach an error message."""
    exc = requests.exceptions.ConnectionError(
        f"HTTPConnectionPool: Max retries exceeded with url http://LAB%5Csvc:{PASSWORD}@sccm01:5985/wsman "
        "(headers {'Authorization': 'Basic TEFCXHN2YzpTdXAzciRlY3JldCFwdw=='})"
    )

    error = classify_exception(exc)

    assert error is not None
    assert PASSWORD not in error.message and "TEFCXHN2YzpTdXAzciRlY3JldCFwdw" not in error.message
    assert "http://sccm01:5985/wsman" in error.message


def test_pywinrm_exceptions_never_carry_the_password_into_messages() -> None:
    """Whatever pywinrm raised for a session built with a password, the error omits it."""
    for status, body in ((401, b""), (400, b""), (500, (CAPTURES / "omi_wmi_not_found.xml").read_bytes())):
        error = classify_exception(_raised_by_pywinrm(status, body))
        assert error is not None
        assert PASSWORD not in error.message and PASSWORD not in repr(error.as_dict())


_PASSWORDS = st.from_regex(r"[A-Za-z0-9!$%*@]{8,24}", fullmatch=True).filter(
    lambda value: any(c.isdigit() for c in value) and any(c in "!$%*" for c in value)
)


@given(password=_PASSWORDS, scheme=st.sampled_from(["http", "https", "HTTPS"]))
@settings(max_examples=200, deadline=None)
def test_no_password_survives_sanitizing(password: str, scheme: str) -> None:
    """A password embedded as URL userinfo (even holding '@') is always removed."""
    text = f"Max retries exceeded with url: {scheme}://user:{password}@host:5986/wsman (Caused by X)"

    assert password not in sanitize_text(text)


# --- outcomes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("return_value", "flag", "outcome"),
    [
        (0, STORAGE_COMPRESS, "accepted"),
        (0, 2, "accepted"),
        (0, None, "accepted"),
        (21, STORAGE_COMPRESS, "medium_not_ready"),
        (1, STORAGE_COMPRESS, "failed"),  # undocumented: not guessed into "wait for the medium"
        (2147749889, STORAGE_COMPRESS, "failed"),
        (21, 2, "failed"),
        (1, 2, "failed"),
        (1, None, "failed"),
        (-1, 4, "failed"),
    ],
)
def test_refresh_outcome_reads_return_values_per_storage_mode(
    return_value: int, flag: int | None, outcome: str
) -> None:
    """0 is accepted; 21 (ERROR_NOT_READY) is medium-not-ready on STORAGE_COMPRESS; anything else failed."""
    assert refresh_outcome(return_value, flag) == outcome


def test_generic_wmi_failure_naming_a_device_not_ready_is_medium_not_ready() -> None:
    """WBEM_E_FAILED on a STORAGE_COMPRESS package whose SMS_ExtendedStatus names ERROR_NOT_READY
    becomes MediumNotReadyError, details kept."""
    status = ExtendedStatus(
        class_name="SMS_ExtendedStatus", description="Error: 0x80070015 (ERROR_NOT_READY)", error_code=7
    )
    original = ProviderFailureError(
        "WS-Man fault",
        code=WBEM_E_FAILED,
        wsman_code=2150859010,
        wmi_code=WBEM_E_FAILED,
        extended_status=status,
        http_status=500,
    )

    converted = error_for_medium_fault(original, STORAGE_COMPRESS)

    assert isinstance(converted, MediumNotReadyError) and converted.retryable
    assert (converted.code, converted.wsman_code, converted.wmi_code, converted.http_status) == (
        WBEM_E_FAILED,
        2150859010,
        WBEM_E_FAILED,
        500,
    )
    assert converted.extended_status is status
    assert converted.__cause__ is original


@pytest.mark.parametrize(
    ("error", "flag"),
    [
        (ProviderFailureError("x", wmi_code=WBEM_E_FAILED), STORAGE_COMPRESS),  # names no device
        (
            ProviderFailureError(
                "x",
                wmi_code=WBEM_E_FAILED,
                extended_status=ExtendedStatus(
                    class_name="SMS_ExtendedStatus", description="Failed to get a connection to the site database"
                ),
            ),
            STORAGE_COMPRESS,
        ),
        (ProviderFailureError("x", wmi_code=WBEM_E_FAILED, code=21), 2),
        (ProviderFailureError("x", wmi_code=WBEM_E_FAILED), 2),
        (ProviderFailureError("x", wmi_code=WBEM_E_FAILED), None),
        (ProviderFailureError("x", wmi_code=WBEM_E_PROVIDER_FAILURE), STORAGE_COMPRESS),
        (ProviderFailureError("HTTP 500 without fault", http_status=500), STORAGE_COMPRESS),
        (QuotaError("x", wmi_code=WBEM_E_FAILED), STORAGE_COMPRESS),
        (AccessDeniedError("x"), STORAGE_COMPRESS),
    ],
)
def test_other_errors_keep_their_meaning_on_any_package(error: RefreshError, flag: int | None) -> None:
    """Only WBEM_E_FAILED naming a device not ready on STORAGE_COMPRESS is converted; the rest is kept."""
    assert error_for_medium_fault(error, flag) is error


@pytest.mark.parametrize(
    "error",
    [
        ProviderFailureError("x", wmi_code=WBEM_E_FAILED, code=21),
        ProviderFailureError("x", wmi_code=WBEM_E_FAILED, code=0x80070015),
        ProviderFailureError(
            "x",
            wmi_code=WBEM_E_FAILED,
            extended_status=ExtendedStatus(class_name="SMS_ExtendedStatus", error_code=0x80070015),
        ),
        ProviderFailureError("WS-Man fault: The device is not ready.", wmi_code=WBEM_E_FAILED),
    ],
    ids=["win32-code", "hresult", "extended-status-code", "windows-text"],
)
def test_each_way_a_fault_names_error_not_ready_counts(error: RefreshError) -> None:
    assert isinstance(error_for_medium_fault(error, STORAGE_COMPRESS), MediumNotReadyError)


# --- HTTP error replies behind pywinrm's exceptions ------------------------------------


def test_http_error_reply_reads_a_transport_error() -> None:
    """A WinRMTransportError yields its status and the body pywinrm decoded."""
    reply = http_error_reply(_raised_by_pywinrm(503, b"busy", via_transport=True))

    assert reply == HttpErrorReply(status=503, body="busy")


def test_http_error_reply_recovers_the_raw_bytes_pywinrm_could_not_decode() -> None:
    """A UTF-16 body makes pywinrm raise UnicodeDecodeError; its bytes and the status are recovered."""
    body = (CAPTURES / "winrb_quota_shells.xml").read_text(encoding="utf-8").encode("utf-16")
    raised = _raised_by_pywinrm(500, body, via_transport=True)

    assert isinstance(raised, UnicodeDecodeError)
    assert http_error_reply(raised) == HttpErrorReply(status=500, body=body)
    assert isinstance(classify_exception(raised), QuotaError)


@pytest.mark.parametrize(
    "exc",
    [
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),  # not from an HTTP error
        ValueError("bug"),
    ],
)
def test_http_error_reply_is_none_for_other_exceptions(exc: Exception) -> None:
    """Only pywinrm's HTTP errors carry a reply; an unrelated decoding error stays unclassified."""
    assert http_error_reply(exc) is None
    assert classify_exception(exc) is None


def test_a_transport_error_with_odd_arguments_still_maps_by_what_is_readable() -> None:
    """A WinRMTransportError whose status or body have unexpected types maps as 'no status, no fault'."""
    error = classify_exception(WinRMTransportError("http", "500", None))

    assert type(error) is ProviderFailureError and error.http_status is None
