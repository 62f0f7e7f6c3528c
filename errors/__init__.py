"""One error hierarchy for everything the worker can hit, split by what to do about it.

    RefreshError
    ├── TransientError          retry soon (in-call, then by re-queueing)
    │   ├── ConnectError        cannot reach the provider / connection reset / TLS handshake blip
    │   ├── OperationTimeoutError read timeout or w:TimedOut fault
    │   ├── ServerBusyError     HTTP 503/429 from HTTP.sys, or the provider out of memory / busy
    │   ├── QuotaError          WinRM quota: too many concurrent operations for the user
    │   └── ProviderFailureError WBEM_E_FAILED / PROVIDER_FAILURE without a better meaning
    ├── MediumNotReadyError     STORAGE_COMPRESS source medium not ready: wait minutes-hours
    └── PermanentError          fail at once, never retry
        ├── AuthError           401 or a logon the account cannot do (retrying only locks it)
        ├── AccessDeniedError   WBEM_E_ACCESS_DENIED / RBAC
        ├── NotFoundError       no such package instance, file or path
        ├── InvalidRequestError invalid class / selector / query / parameter
        ├── ReturnValueError    RefreshPkgSource returned non-zero on a package with no medium to wait for
        ├── ProtocolError       reply we cannot trust (bad RelatesTo, unparseable XML, a DTD, over a limit)
        │   └── InternalError   a bug in sccm-refresh (reported as failed, then re-raised)
        └── ConfigError         no provider configured for the site, unreadable secret

Every error carries structured attributes (`kind`, `code`, `wsman_code`, `wmi_code`,
`extended_status`) so outcomes can be published without parsing messages. Messages never
contain credentials: they are built from fault XML and our own text only. Which fault or
exception becomes which class is decided in `worker.provider.classify` (see docs/errors.md).

The hierarchy sits at the bottom of the layers, with `config`: it imports nothing of the project.
An error's `extended_status` is the WS-Man layer's `ExtendedStatus` (worker/wsman/faultinfo.py),
held here by what it can do (`as_dict()`), not by importing it.
"""

from __future__ import annotations

from typing import Any, Protocol


class ExtendedDetail(Protocol):
    """`__ExtendedStatus` / `SMS_ExtendedStatus` details of a WMI fault, as the outcome publishes them."""

    @property
    def class_name(self) -> str: ...

    @property
    def description(self) -> str | None: ...

    @property
    def error_code(self) -> int | None: ...

    @property
    def operation(self) -> str | None: ...

    @property
    def status_code(self) -> int | None: ...

    def as_dict(self) -> dict[str, Any]: ...


__all__ = [
    "AccessDeniedError",
    "AttemptSupersededError",
    "AuthError",
    "ConfigError",
    "ConnectError",
    "ExtendedDetail",
    "InternalError",
    "InvalidRequestError",
    "MediumNotReadyError",
    "NotFoundError",
    "OperationTimeoutError",
    "PermanentError",
    "ProtocolError",
    "ProviderFailureError",
    "QuotaError",
    "RefreshError",
    "ReturnValueError",
    "ServerBusyError",
    "TransientError",
]


class RefreshError(Exception):
    """Root of every error the refresh path raises on purpose."""

    kind: str = "error"
    retryable: bool = False
    # The outcome status when a request ends on this error (retries exhausted or none allowed).
    final_status: str = "failed"

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        wsman_code: int | None = None,
        wmi_code: int | None = None,
        extended_status: ExtendedDetail | None = None,
        http_status: int | None = None,
        return_value: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.wsman_code = wsman_code
        self.wmi_code = wmi_code
        self.extended_status = extended_status
        self.http_status = http_status
        # The ReturnValue RefreshPkgSource answered, set only when the method answered without a
        # fault; not part of `as_dict()` (the outcome carries ReturnValue in its own field).
        self.return_value = return_value

    def as_dict(self) -> dict[str, Any]:
        """The error as published in an outcome (JSON-ready, no secrets)."""
        return {
            "kind": self.kind,
            "message": self.message,
            "code": self.code,
            "wsman_code": self.wsman_code,
            "wmi_code": self.wmi_code,
            "http_status": self.http_status,
            "extended_status": self.extended_status.as_dict() if self.extended_status else None,
        }


class TransientError(RefreshError):
    kind = "transient"
    retryable = True


class ConnectError(TransientError):
    kind = "connect"


class OperationTimeoutError(TransientError):
    kind = "timeout"


class ServerBusyError(TransientError):
    kind = "server_busy"


class QuotaError(TransientError):
    kind = "quota"


class ProviderFailureError(TransientError):
    kind = "provider_failure"


class MediumNotReadyError(RefreshError):
    """The package is STORAGE_COMPRESS and its source medium is not ready: wait, then retry."""

    kind = "medium_not_ready"
    retryable = True
    final_status = "gave_up_medium_not_ready"


class PermanentError(RefreshError):
    kind = "permanent"
    retryable = False


class AuthError(PermanentError):
    kind = "auth"


class AccessDeniedError(PermanentError):
    kind = "access_denied"


class NotFoundError(PermanentError):
    kind = "not_found"


class InvalidRequestError(PermanentError):
    kind = "invalid_request"


class ProtocolError(PermanentError):
    kind = "protocol"


class ReturnValueError(PermanentError):
    """RefreshPkgSource returned non-zero, other than 21 on a STORAGE_COMPRESS package: a refusal."""

    kind = "return_value"


class InternalError(ProtocolError):
    """A bug in sccm-refresh, not an SCCM condition."""

    kind = "internal"


class ConfigError(PermanentError):
    kind = "config"


class AttemptSupersededError(Exception):
    """This attempt lost its attempt lock (its process stalled past the lease) to another delivery.

    Deliberately not a `RefreshError`: it is no outcome of the request. The attempt stops before
    it could Invoke, its delivery ends without publishing, and the delivery that holds the lock
    now reports the request.
    """
