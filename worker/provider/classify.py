"""What every failure means: WS-Man faults, WS-Man layer exceptions, pywinrm, requests, urllib3.

The one place that decides meaning. `worker.wsman` only parses (`FaultInfo`, `FaultReply`,
`MalformedReply`, `EnvelopeValueError`); here each becomes a `RefreshError` subclass split by
what to do about it (transient, medium-not-ready, permanent). docs/errors.md has the tables.

Pure: no I/O, only `isinstance` checks, code tables and the parsing in `worker.wsman`.

Decisions worth knowing:

* A fault is read by its most specific numeric code first (the MSFT_WmiError code, then the
  provider's inner WSManFault code, then the outer one), then by its subcode, then falls back to
  `ProviderFailureError` (transient). Generic codes (WBEM_E_FAILED, WBEM_E_PROVIDER_FAILURE,
  E_FAIL) are deliberately absent from the tables so they never hide a more specific one.
* Win32 errors count the same bare (`Code="87"`) or as an HRESULT (0x80070057). Those that cannot
  heal by waiting (a missing file or path, an invalid parameter, a logon the account cannot do)
  are permanent; those that can (out of memory, timeouts, an RPC server or file server that
  comes back, a sharing violation) stay transient.
* An exception this module does not recognise is NOT swallowed: `classify_exception`
  returns None and the caller re-raises the original (the task code treats it as a bug and
  fails the request with kind "internal"). Guessing "transient" for unknown errors would
  retry programming errors forever.
* A TLS certificate that fails verification is a `ConfigError` (permanent: a wrong CA
  bundle or host name does not heal by retrying); other TLS failures (handshake reset, EOF)
  are `ConnectError` blips.
* HTTP 400 on a kept-alive session is the symptom of HTTP.sys having closed an idle
  connection under pywinrm's message encryption: `ConnectError`, so the caller resets the
  session and retries.
* An HTTP error body is read as a fault with the WS-Man layer's parser (never a stdlib one),
  from the raw bytes when pywinrm could not decode them as UTF-8 (a UTF-16 fault).
* Messages never carry credentials: pywinrm/requests texts can contain URLs, so userinfo
  is stripped from every URL and Authorization values are masked.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import requests.exceptions as requests_exc
import urllib3.exceptions as urllib3_exc
from winrm import exceptions as winrm_exc

from errors import (
    AccessDeniedError,
    AuthError,
    ConfigError,
    ConnectError,
    InvalidRequestError,
    NotFoundError,
    OperationTimeoutError,
    ProtocolError,
    ProviderFailureError,
    QuotaError,
    RefreshError,
    ServerBusyError,
)
from worker.domain.refresh_answer import WBEM_E_FAILED
from worker.wsman import EnvelopeValueError, FaultInfo, FaultReply, MalformedReply, WsmanError, parse_fault

__all__ = [
    "ERROR_ACCESS_DENIED",
    "E_ACCESSDENIED",
    "WBEM_E_ACCESS_DENIED",
    "WBEM_E_FAILED",
    "WBEM_E_INVALID_CLASS",
    "WBEM_E_INVALID_NAMESPACE",
    "WBEM_E_INVALID_PARAMETER",
    "WBEM_E_INVALID_QUERY",
    "WBEM_E_NOT_FOUND",
    "WBEM_E_OUT_OF_MEMORY",
    "WBEM_E_PROVIDER_FAILURE",
    "WSMAN_CANNOT_PROCESS_FILTER",
    "WSMAN_DESTINATION_UNREACHABLE",
    "WSMAN_INVALID_HEADER",
    "WSMAN_INVALID_SELECTORS",
    "WSMAN_QUOTA_MAX_OPERATIONS_USER",
    "WSMAN_QUOTA_MAX_SHELLS_USER",
    "WSMAN_SCHEMA_VALIDATION",
    "WSMAN_TIMED_OUT",
    "HttpErrorReply",
    "classify_exception",
    "error_for_http_reply",
    "error_from_wsman",
    "fault_in_reply",
    "fault_to_error",
    "hresult_from_win32",
    "http_error_reply",
    "http_status_error",
    "sanitize_text",
]

# --- what a WS-Man fault means ---------------------------------------------------------

# WMI HRESULTs (WbemErrorEnum, wbemcli.h); WBEM_E_FAILED, with its medium rule, is in
# worker/domain/refresh_answer.py.
WBEM_E_NOT_FOUND = 0x80041002
WBEM_E_ACCESS_DENIED = 0x80041003
WBEM_E_PROVIDER_FAILURE = 0x80041004
WBEM_E_TYPE_MISMATCH = 0x80041005
# The provider host ran out of its memory quota (WMI's provider-host limits), not the server:
# busy, retry later. Not to be confused with the SMS Provider lacking resources for good.
WBEM_E_OUT_OF_MEMORY = 0x80041006
WBEM_E_INVALID_PARAMETER = 0x80041008
WBEM_E_NOT_SUPPORTED = 0x8004100C
WBEM_E_INVALID_NAMESPACE = 0x8004100E
WBEM_E_INVALID_CLASS = 0x80041010
WBEM_E_INVALID_OPERATION = 0x80041016
WBEM_E_INVALID_QUERY = 0x80041017
WBEM_E_INVALID_QUERY_TYPE = 0x80041018
WBEM_E_QUOTA_VIOLATION = 0x8004106C

# WSManFault codes (winerror.h ERROR_WSMAN_*), as real servers send them.
WSMAN_DESTINATION_UNREACHABLE = 2150858752  # 0x80338000 resource/instance not found
WSMAN_INVALID_HEADER = 2150858767  # 0x8033800F invalid SOAP header (e.g. a bad timeout)
WSMAN_CANNOT_PROCESS_FILTER = 2150858778  # 0x8033801A class not found / bad WQL
WSMAN_TIMED_OUT = 2150858793  # 0x80338029 OperationTimeout elapsed
WSMAN_SCHEMA_VALIDATION = 2150858817  # 0x80338041
WSMAN_INVALID_SELECTORS = 2150858843  # 0x8033805B
WSMAN_URI_WITHOUT_KEYS = 2150859002  # 0x803380FA class is not a singleton: keys needed
WSMAN_QUOTA_MAX_SHELLS_USER = 2150859173  # 0x803381A5
WSMAN_QUOTA_MAX_OPERATIONS_USER = 2150859174  # 0x803381A6

# COM HRESULTs that are not Win32 errors.
E_NOTIMPL = 0x80004001

# Win32 errors (winerror.h). A WSManFault Code may carry one bare; HRESULT_FROM_WIN32 wraps it as
# 0x8007xxxx (E_ACCESSDENIED = 0x80070005, E_INVALIDARG = 0x80070057, E_OUTOFMEMORY = 0x8007000E).
ERROR_ACCESS_DENIED = 5
E_ACCESSDENIED = 0x80070005
_FACILITY_WIN32_HRESULT = 0x80070000
_WIN32_CODE_MASK = 0xFFFF

_ByMeaning = type[RefreshError]

# Win32 errors by meaning. Permanent ones cannot heal by waiting: someone has to fix the path,
# the request or the account first. Transient ones listed here only where the kind differs from
# the ProviderFailureError fallback.
_ERROR_BY_WIN32_CODE: dict[int, _ByMeaning] = {
    # The file, folder, drive or share named does not exist (a server that is down answers
    # ERROR_BAD_NETPATH instead, below). WinRM also reports a plug-in it cannot load as 2.
    2: NotFoundError,  # ERROR_FILE_NOT_FOUND
    3: NotFoundError,  # ERROR_PATH_NOT_FOUND
    15: NotFoundError,  # ERROR_INVALID_DRIVE
    67: NotFoundError,  # ERROR_BAD_NET_NAME: the server answered, the share is not there
    1168: NotFoundError,  # ERROR_NOT_FOUND
    5: AccessDeniedError,  # ERROR_ACCESS_DENIED
    # The request itself is wrong: the same request fails the same way every time.
    1: InvalidRequestError,  # ERROR_INVALID_FUNCTION
    6: InvalidRequestError,  # ERROR_INVALID_HANDLE
    13: InvalidRequestError,  # ERROR_INVALID_DATA
    50: InvalidRequestError,  # ERROR_NOT_SUPPORTED
    87: InvalidRequestError,  # ERROR_INVALID_PARAMETER (w:InvalidParameter, E_INVALIDARG)
    120: InvalidRequestError,  # ERROR_CALL_NOT_IMPLEMENTED
    123: InvalidRequestError,  # ERROR_INVALID_NAME: file or folder name syntax
    161: InvalidRequestError,  # ERROR_BAD_PATHNAME
    # The account cannot log on: retrying only adds failed logons (and lock-outs).
    1317: AuthError,  # ERROR_NO_SUCH_USER
    1326: AuthError,  # ERROR_LOGON_FAILURE
    1327: AuthError,  # ERROR_ACCOUNT_RESTRICTION
    1328: AuthError,  # ERROR_INVALID_LOGON_HOURS
    1329: AuthError,  # ERROR_INVALID_WORKSTATION
    1330: AuthError,  # ERROR_PASSWORD_EXPIRED
    1331: AuthError,  # ERROR_ACCOUNT_DISABLED
    1385: AuthError,  # ERROR_LOGON_TYPE_NOT_GRANTED
    1793: AuthError,  # ERROR_ACCOUNT_EXPIRED
    1907: AuthError,  # ERROR_PASSWORD_MUST_CHANGE
    1909: AuthError,  # ERROR_ACCOUNT_LOCKED_OUT
    # Transient, the provider short of resources: like an HTTP 503.
    8: ServerBusyError,  # ERROR_NOT_ENOUGH_MEMORY
    14: ServerBusyError,  # ERROR_OUTOFMEMORY (E_OUTOFMEMORY)
    170: ServerBusyError,  # ERROR_BUSY
    1450: ServerBusyError,  # ERROR_NO_SYSTEM_RESOURCES
    1723: ServerBusyError,  # RPC_S_SERVER_TOO_BUSY
    # Transient, something took too long.
    121: OperationTimeoutError,  # ERROR_SEM_TIMEOUT
    258: OperationTimeoutError,  # WAIT_TIMEOUT
    1460: OperationTimeoutError,  # ERROR_TIMEOUT
}
# Deliberately left to the ProviderFailureError fallback (transient), because they heal: 21
# ERROR_NOT_READY (a device or medium not ready), 32/33 sharing and lock violations (a file in
# use), 53 ERROR_BAD_NETPATH, 59 ERROR_UNEXP_NET_ERR, 64 ERROR_NETNAME_DELETED, 1231
# ERROR_NETWORK_UNREACHABLE (a file server coming back), 112 ERROR_DISK_FULL (space freed),
# 1115 ERROR_SHUTDOWN_IN_PROGRESS, 1311 ERROR_NO_LOGON_SERVERS and 1355 ERROR_NO_SUCH_DOMAIN (a
# domain controller out of reach), 1722/1726/1727 RPC server unavailable / call failed.


def hresult_from_win32(code: int) -> int:
    """HRESULT_FROM_WIN32: the 0x8007xxxx HRESULT a Win32 error travels as."""
    return _FACILITY_WIN32_HRESULT | (code & _WIN32_CODE_MASK)


# By code, whatever carried it (MSFT_WmiError, inner or outer WSManFault).
_ERROR_BY_CODE: dict[int, _ByMeaning] = {
    WBEM_E_ACCESS_DENIED: AccessDeniedError,
    WBEM_E_NOT_FOUND: NotFoundError,
    WSMAN_DESTINATION_UNREACHABLE: NotFoundError,
    WBEM_E_TYPE_MISMATCH: InvalidRequestError,
    WBEM_E_INVALID_PARAMETER: InvalidRequestError,
    WBEM_E_NOT_SUPPORTED: InvalidRequestError,
    WBEM_E_INVALID_CLASS: InvalidRequestError,
    WBEM_E_INVALID_OPERATION: InvalidRequestError,
    WBEM_E_INVALID_QUERY: InvalidRequestError,
    WBEM_E_INVALID_QUERY_TYPE: InvalidRequestError,
    WSMAN_INVALID_HEADER: InvalidRequestError,
    WSMAN_CANNOT_PROCESS_FILTER: InvalidRequestError,
    WSMAN_SCHEMA_VALIDATION: InvalidRequestError,
    WSMAN_INVALID_SELECTORS: InvalidRequestError,
    WSMAN_URI_WITHOUT_KEYS: InvalidRequestError,
    E_NOTIMPL: InvalidRequestError,
    # The site's namespace does not exist on that host: the provider mapping is wrong.
    WBEM_E_INVALID_NAMESPACE: ConfigError,
    WSMAN_TIMED_OUT: OperationTimeoutError,
    WSMAN_QUOTA_MAX_SHELLS_USER: QuotaError,
    WSMAN_QUOTA_MAX_OPERATIONS_USER: QuotaError,
    WBEM_E_QUOTA_VIOLATION: QuotaError,
    WBEM_E_OUT_OF_MEMORY: ServerBusyError,
    **_ERROR_BY_WIN32_CODE,
    **{hresult_from_win32(code): meaning for code, meaning in _ERROR_BY_WIN32_CODE.items()},
}

# By the local part of s:Subcode/s:Value (or s:Code/s:Value): prefixes vary, the local names
# of WS-Addressing, WS-Management and WS-Enumeration faults do not collide.
_ERROR_BY_SUBCODE: dict[str, _ByMeaning] = {
    "AccessDenied": AccessDeniedError,
    "DestinationUnreachable": NotFoundError,
    "ActionNotSupported": InvalidRequestError,
    "InvalidSelectors": InvalidRequestError,
    "InvalidParameter": InvalidRequestError,
    "SchemaValidationError": InvalidRequestError,
    "CannotProcessFilter": InvalidRequestError,
    "FilterDialectRequestedUnavailable": InvalidRequestError,
    "InvalidMessageInformationHeader": InvalidRequestError,
    "MessageInformationHeaderRequired": InvalidRequestError,
    "EncodingLimit": InvalidRequestError,
    "UnsupportedFeature": InvalidRequestError,
    "InvalidOptions": InvalidRequestError,
    "InvalidRepresentation": InvalidRequestError,
    "MustUnderstand": InvalidRequestError,
    "VersionMismatch": InvalidRequestError,
    "DataEncodingUnknown": InvalidRequestError,
    # A Pull on a context the server dropped (expired, evicted): the same Pull cannot succeed.
    "InvalidEnumerationContext": InvalidRequestError,
    "TimedOut": OperationTimeoutError,
    "QuotaLimit": QuotaError,
}

_MAX_FAULT_TEXT_CHARS = 400


def fault_to_error(info: FaultInfo, http_status: int | None = None) -> RefreshError:
    """The worker error a fault means (see the module docstring for the order of evidence)."""
    error_class = _fault_meaning(info)
    provider = info.provider_fault
    return error_class(
        _fault_message(info),
        code=next(iter(info.codes()), None),
        wsman_code=info.wsman_code if info.wsman_code is not None else (provider.wsman_code if provider else None),
        wmi_code=info.wmi_error_code,
        extended_status=info.extended_status,
        http_status=http_status,
    )


def _fault_meaning(info: FaultInfo) -> _ByMeaning:
    for code in info.codes():
        if code in _ERROR_BY_CODE:
            return _ERROR_BY_CODE[code]
    for name in (info.subcode_name, info.code_name):
        if name is not None and name in _ERROR_BY_SUBCODE:
            return _ERROR_BY_SUBCODE[name]
    return ProviderFailureError


def _fault_message(info: FaultInfo) -> str:
    facts = [info.subcode or info.code or "SOAP fault"]
    facts.extend(f"0x{code:08X}" for code in info.codes())
    text = _shorten(info.text)
    status = info.extended_status
    if status is not None and status.description:
        text = f"{text} ({status.class_name}: {_shorten(status.description)})"
    return f"WS-Man fault [{', '.join(facts)}]: {text}"


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_FAULT_TEXT_CHARS else flat[: _MAX_FAULT_TEXT_CHARS - 3] + "..."


# --- the WS-Man layer's exceptions -----------------------------------------------------


def error_from_wsman(exc: WsmanError) -> RefreshError:
    """A fault means what `fault_to_error` says; a bad reply is a ProtocolError; a value no
    envelope can carry is an InvalidRequestError."""
    if isinstance(exc, FaultReply):
        return fault_to_error(exc.fault, http_status=exc.http_status)
    if isinstance(exc, EnvelopeValueError):
        return InvalidRequestError(str(exc))
    if isinstance(exc, MalformedReply):
        return ProtocolError(str(exc))
    return ProtocolError(f"WS-Man error: {type(exc).__name__}")


# --- HTTP error replies ----------------------------------------------------------------

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


@dataclass(frozen=True)
class HttpErrorReply:
    """An HTTP error pywinrm raised about: its status (None when unreadable) and its body."""

    status: int | None
    body: bytes | str


def http_error_reply(exc: BaseException) -> HttpErrorReply | None:
    """The HTTP error reply behind a pywinrm exception, None when `exc` is not one.

    pywinrm raises `WinRMTransportError(protocol, status, body)` for HTTP errors other than 401,
    after decoding the body as UTF-8; a body that is not UTF-8 (a UTF-16 fault) makes that
    decoding raise `UnicodeDecodeError` instead, while handling requests' HTTPError: its `object`
    is the raw body and the HTTPError its context.
    """
    if isinstance(exc, winrm_exc.WinRMTransportError):
        args = exc.args
        status = args[1] if len(args) > 1 else None
        body = args[2] if len(args) > 2 else None
        return HttpErrorReply(
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            body=body if isinstance(body, bytes | str) else b"",
        )
    context = exc.__context__
    if isinstance(exc, UnicodeDecodeError) and isinstance(context, requests_exc.HTTPError):
        response = context.response
        return HttpErrorReply(status=response.status_code if response is not None else None, body=exc.object)
    return None


def fault_in_reply(body: bytes | str) -> FaultInfo | None:
    """The SOAP fault an HTTP error body carries; None when it holds none or cannot be trusted."""
    if not body:
        return None
    try:
        return parse_fault(body)
    except MalformedReply:
        return None


def error_for_http_reply(reply: HttpErrorReply) -> RefreshError:
    """A fault in the body decides; without one, the HTTP status does."""
    info = fault_in_reply(reply.body)
    return fault_to_error(info, http_status=reply.status) if info is not None else http_status_error(reply.status)


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


def http_status_error(status: int | None) -> RefreshError:
    """What an HTTP error status means when its body holds no SOAP fault."""
    what = f"HTTP {status}" if status is not None else "unreadable HTTP status"
    fallback = (
        (InvalidRequestError, "the provider refused the request")
        if status is not None and _HTTP_CLIENT_ERROR_MIN <= status < _HTTP_SERVER_ERROR_MIN
        else (ProviderFailureError, "the provider failed")
    )
    error_class, text = _BY_HTTP_STATUS.get(status or 0, fallback)
    return error_class(f"{text} ({what}, no SOAP fault)", http_status=status)


# --- everything else -------------------------------------------------------------------


def classify_exception(exc: BaseException) -> RefreshError | None:
    """The RefreshError `exc` means, or None when it is not an error this module knows."""
    if isinstance(exc, RefreshError):
        return exc
    if isinstance(exc, WsmanError):
        return error_from_wsman(exc)
    reply = http_error_reply(exc)
    if reply is not None:
        return error_for_http_reply(reply)
    return _classify_winrm(exc) or _classify_kerberos(exc) or _classify_network(exc)


_MAX_MESSAGE_CHARS = 300
_MAX_CHAIN_DEPTH = 8
# Greedy up to the last "@" of the authority, so a password holding "@" is removed whole.
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s'\"<>?#]*@")
_AUTHORIZATION_RE = re.compile(r"(?i)\b((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\r\n]*")
_CERT_VERIFY_MARKERS = ("certificate_verify_failed", "certificate verify failed", "hostname mismatch")
# pywinrm raises plain WinRMError when an encrypted reply fails its integrity check.
_TAMPER_MARKERS = ("tampered", "encrypted length")


def sanitize_text(text: str) -> str:
    """`text` with URL userinfo and Authorization values removed, flattened and shortened."""
    cleaned = _URL_USERINFO_RE.sub(r"\1", text)
    cleaned = _AUTHORIZATION_RE.sub(r"\1[redacted]", cleaned)
    flat = " ".join(cleaned.split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 3] + "..."


# --- pywinrm ---------------------------------------------------------------------------

# Recognised by module and name: importing pywinrm's vendored requests-kerberos imports pykerberos,
# which only the `kerberos` extra installs (this module must import without it).
_REQUESTS_KERBEROS = "winrm.vendor.requests_kerberos"
_PYKERBEROS_ERRORS = frozenset({"GSSError", "KrbError", "BasicAuthError", "PwdChangeError"})


def _classify_kerberos(exc: BaseException) -> RefreshError | None:
    """Kerberos failures after our own logon checks passed (worker/provider/kerberos.py): rare."""
    module, name = type(exc).__module__, type(exc).__name__
    if module.startswith(_REQUESTS_KERBEROS) and name == "MutualAuthenticationError":
        # The provider's answer did not prove it holds the SPN's key: a wrong or hostile acceptor.
        return AuthError("Kerberos: the provider's reply failed mutual authentication (not the SPN's holder?)")
    if module.startswith(_REQUESTS_KERBEROS) and name == "KerberosExchangeError":
        return AuthError(f"Kerberos: the ticket exchange with the provider failed: {sanitize_text(str(exc))}")
    if module == "kerberos" and name in _PYKERBEROS_ERRORS:
        return AuthError(f"Kerberos: the security context with the provider failed: {sanitize_text(str(exc))}")
    return None


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
    info = fault_in_reply(exc.response) if isinstance(exc.response, str | bytes) else None
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
        return http_status_error(response.status_code if response is not None else None)
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
