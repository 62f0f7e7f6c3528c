"""Turn what pywinrm, requests and urllib3 raise into the worker's errors, and judge results.

Pure: no I/O, only `isinstance` checks and the parsing in `worker.wsman`.

Decisions worth knowing:

* An exception this module does not recognise is NOT swallowed: `classify_exception`
  returns None and the caller re-raises the original (the task code treats it as a bug and
  fails the request with kind "internal"). Guessing "transient" for unknown errors would
  retry programming errors forever.
* A TLS certificate that fails verification is a `ConfigError` (permanent: a wrong CA
  bundle or host name does not heal by retrying); other TLS failures (handshake reset, EOF)
  are `ConnectError` blips.
* HTTP 400 on a kept-alive session is the symptom of HTTP.sys having closed an idle
  connection under pywinrm's message encryption: `ConnectError`, so the caller resets the
  session and retries (DESIGN.md section 2).
* Messages never carry credentials: pywinrm/requests texts can contain URLs, so userinfo
  is stripped from every URL and Authorization values are masked.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from typing import Literal

import requests.exceptions as requests_exc
import urllib3.exceptions as urllib3_exc
from winrm import exceptions as winrm_exc

from worker.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    InvalidRequestError,
    MediumNotReadyError,
    OperationTimeoutError,
    ProtocolError,
    ProviderFailureError,
    RefreshError,
    ServerBusyError,
)
from worker.packages import STORAGE_COMPRESS
from worker.wsman.faults import WBEM_E_FAILED, WSMAN_TIMED_OUT, FaultInfo, fault_to_error, parse_fault

__all__ = [
    "RefreshOutcome",
    "classify_exception",
    "error_for_medium_fault",
    "refresh_outcome",
    "sanitize_text",
]

RefreshOutcome = Literal["accepted", "medium_not_ready", "failed"]

HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_NOT_FOUND = 404
HTTP_METHOD_NOT_ALLOWED = 405
HTTP_REQUEST_TIMEOUT = 408
HTTP_PAYLOAD_TOO_LARGE = 413
HTTP_TOO_MANY_REQUESTS = 429
HTTP_INTERNAL_SERVER_ERROR = 500
HTTP_SERVICE_UNAVAILABLE = 503
_HTTP_CLIENT_ERROR_MIN = 400
_HTTP_SERVER_ERROR_MIN = 500

_MAX_MESSAGE_CHARS = 300
_MAX_CHAIN_DEPTH = 8
# Greedy up to the last "@" of the authority, so a password holding "@" is removed whole.
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s'\"<>?#]*@")
_AUTHORIZATION_RE = re.compile(r"(?i)\b((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\r\n]*")
_CERT_VERIFY_MARKERS = ("certificate_verify_failed", "certificate verify failed", "hostname mismatch")
# pywinrm raises plain WinRMError when an encrypted reply fails its integrity check.
_TAMPER_MARKERS = ("tampered", "encrypted length")


def classify_exception(exc: BaseException) -> RefreshError | None:
    """The RefreshError `exc` means, or None when it is not an error this module knows."""
    if isinstance(exc, RefreshError):
        return exc
    return _classify_winrm(exc) or _classify_network(exc)


def refresh_outcome(return_value: int, pkg_source_flag: int | None) -> RefreshOutcome:
    """What a RefreshPkgSource ReturnValue means for this package.

    0 is "accepted" (DistMgr does the work later). A non-zero value on a STORAGE_COMPRESS
    package is read as the source medium not being ready (ConfigMgr 2007 SDK), which clears
    once an operator mounts it; anything else non-zero is a failure.
    """
    if return_value == 0:
        return "accepted"
    if pkg_source_flag == STORAGE_COMPRESS:
        return "medium_not_ready"
    return "failed"


def error_for_medium_fault(err: RefreshError, pkg_source_flag: int | None) -> RefreshError:
    """A RefreshPkgSource WBEM_E_FAILED fault on a STORAGE_COMPRESS package is MediumNotReadyError.

    Only the generic WMI failure is converted: quota, timeout and HTTP-level failures keep
    their own meaning (and short retry schedule) even on a compressed package.
    """
    if not isinstance(err, ProviderFailureError) or pkg_source_flag != STORAGE_COMPRESS:
        return err
    if err.wmi_code != WBEM_E_FAILED:
        return err
    converted = MediumNotReadyError(
        f"source medium not ready (STORAGE_COMPRESS package): {err.message}",
        code=err.code,
        wsman_code=err.wsman_code,
        wmi_code=err.wmi_code,
        extended_status=err.extended_status,
        http_status=err.http_status,
    )
    converted.__cause__ = err
    return converted


def sanitize_text(text: str) -> str:
    """`text` with URL userinfo and Authorization values removed, flattened and shortened."""
    cleaned = _URL_USERINFO_RE.sub(r"\1", text)
    cleaned = _AUTHORIZATION_RE.sub(r"\1[redacted]", cleaned)
    flat = " ".join(cleaned.split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 3] + "..."


# --- pywinrm ---------------------------------------------------------------------------


def _classify_winrm(exc: BaseException) -> RefreshError | None:
    if isinstance(exc, winrm_exc.WSManFaultError):
        return _from_wsman_fault(exc)
    if isinstance(exc, winrm_exc.AuthenticationError):  # InvalidCredentialsError, BasicAuthDisabledError
        return AuthError("the provider rejected the credentials (HTTP 401)", http_status=HTTP_UNAUTHORIZED)
    if isinstance(exc, winrm_exc.WinRMOperationTimeoutError):
        # pywinrm raises this, with no details, for every WSManFault 2150858793.
        return OperationTimeoutError(
            "WS-Man operation timed out (w:TimedOut)",
            code=WSMAN_TIMED_OUT,
            wsman_code=WSMAN_TIMED_OUT,
            http_status=HTTP_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, winrm_exc.WinRMTransportError):
        return _from_transport_error(exc)
    if isinstance(exc, winrm_exc.WinRMError):
        return _from_plain_winrm_error(exc)
    return None


def _from_plain_winrm_error(exc: winrm_exc.WinRMError) -> RefreshError:
    text = sanitize_text(str(exc))
    if any(marker in text.lower() for marker in _TAMPER_MARKERS):
        return ProtocolError(f"encrypted reply failed its integrity check: {text}")
    return ConfigError(f"pywinrm refused the connection settings: {text}")


def _from_wsman_fault(exc: winrm_exc.WSManFaultError) -> RefreshError:
    status = exc.code if isinstance(exc.code, int) else None
    info: FaultInfo | None = None
    if isinstance(exc.response, str | bytes) and exc.response:
        try:
            info = parse_fault(exc.response)
        except ProtocolError:
            info = None
    if info is None:
        # The body was not a parseable fault: use what pywinrm extracted itself.
        info = FaultInfo(
            code=exc.fault_code,
            subcode=exc.fault_subcode,
            reason=exc.reason,
            wsman_code=exc.wsman_fault_code,
            wmi_error_code=exc.wmierror_code,
        )
    return fault_to_error(info, http_status=status)


def _from_transport_error(exc: winrm_exc.WinRMTransportError) -> RefreshError:
    status = _transport_status(exc)
    body = _transport_body(exc)
    if body:
        try:
            info = parse_fault(body)
        except ProtocolError:
            info = None
        if info is not None:
            return fault_to_error(info, http_status=status)
    return _from_http_status(status)


def _transport_status(exc: winrm_exc.WinRMTransportError) -> int | None:
    args = exc.args
    status = args[1] if len(args) > 1 else None
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _transport_body(exc: winrm_exc.WinRMTransportError) -> str | None:
    args = exc.args
    body = args[2] if len(args) > 2 else None  # WinRMTransportError(protocol, code, text)
    return body if isinstance(body, str) else None


_BY_HTTP_STATUS: dict[int, tuple[type[RefreshError], str]] = {
    HTTP_BAD_REQUEST: (ConnectError, "stale keep-alive session: reset it and retry"),
    HTTP_UNAUTHORIZED: (AuthError, "the provider rejected the credentials"),
    HTTP_NOT_FOUND: (InvalidRequestError, "the provider refused the request"),
    HTTP_METHOD_NOT_ALLOWED: (InvalidRequestError, "the provider refused the request"),
    HTTP_PAYLOAD_TOO_LARGE: (InvalidRequestError, "the provider refused the request"),
    HTTP_REQUEST_TIMEOUT: (OperationTimeoutError, "the provider timed out reading the request"),
    HTTP_TOO_MANY_REQUESTS: (ServerBusyError, "the provider is busy"),
    HTTP_SERVICE_UNAVAILABLE: (ServerBusyError, "the provider is busy"),
}


def _from_http_status(status: int | None) -> RefreshError:
    what = f"HTTP {status}" if status is not None else "unreadable HTTP status"
    fallback = (
        (InvalidRequestError, "the provider refused the request")
        if status is not None and _HTTP_CLIENT_ERROR_MIN <= status < _HTTP_SERVER_ERROR_MIN
        else (ProviderFailureError, "the provider failed")
    )
    error_class, text = _BY_HTTP_STATUS.get(status or 0, fallback)
    return error_class(f"{text} ({what}, no SOAP fault)", http_status=status)


# --- requests / urllib3 / sockets ------------------------------------------------------

_TLS_ERRORS = (requests_exc.SSLError, urllib3_exc.SSLError, ssl.SSLError)

# First match wins, so subclasses come before their bases: requests' ConnectTimeout is both
# a ConnectionError and a Timeout; nothing was sent then, so it means "unreachable".
_BY_EXCEPTION_TYPE: tuple[tuple[tuple[type[BaseException], ...], type[RefreshError], str], ...] = (
    ((requests_exc.ConnectTimeout,), ConnectError, "timed out connecting to the provider"),
    (
        (requests_exc.Timeout, urllib3_exc.ReadTimeoutError, TimeoutError),  # socket.timeout is TimeoutError
        OperationTimeoutError,
        "timed out waiting for the provider",
    ),
    (
        (
            requests_exc.ConnectionError,
            requests_exc.ChunkedEncodingError,
            requests_exc.ContentDecodingError,
            urllib3_exc.ProtocolError,
            urllib3_exc.NewConnectionError,
            urllib3_exc.ConnectTimeoutError,
            urllib3_exc.MaxRetryError,
            urllib3_exc.ProxyError,
            urllib3_exc.IncompleteRead,
            urllib3_exc.InvalidChunkLength,
            ConnectionError,
            socket.gaierror,
            socket.herror,
        ),
        ConnectError,
        "connection to the provider failed",
    ),
    ((requests_exc.RetryError,), ServerBusyError, "the provider kept answering with retryable statuses"),
    (
        (
            requests_exc.InvalidURL,
            requests_exc.MissingSchema,
            requests_exc.InvalidSchema,
            requests_exc.InvalidHeader,
            requests_exc.URLRequired,
            requests_exc.TooManyRedirects,
        ),
        ConfigError,
        "the provider endpoint is misconfigured",
    ),
)


def _classify_network(exc: BaseException) -> RefreshError | None:
    detail = _describe(exc)
    if isinstance(exc, _TLS_ERRORS):
        if _is_certificate_failure(exc):
            return ConfigError(f"the provider's TLS certificate failed verification: {detail}")
        return ConnectError(f"TLS handshake with the provider failed: {detail}")
    if isinstance(exc, requests_exc.HTTPError):
        response = exc.response
        return _from_http_status(response.status_code if response is not None else None)
    for types, error_class, text in _BY_EXCEPTION_TYPE:
        if isinstance(exc, types):
            return error_class(f"{text}: {detail}")
    return None


def _is_certificate_failure(exc: BaseException) -> bool:
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            return True
        if any(marker in str(link).lower() for marker in _CERT_VERIFY_MARKERS):
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (causes, contexts, urllib3 `reason`, exception args), bounded."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < _MAX_CHAIN_DEPTH:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        linked = [current.__cause__, current.__context__, reason, *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {sanitize_text(str(exc))}"
