"""What an answer to RefreshPkgSource means for the package it was asked of.

Pure rules. Microsoft documents RefreshPkgSource's ReturnValue only as 0 = success: the non-zero
values and the faults of a failure are not documented. What we read, and why:

* ReturnValue 0 is "accepted" (DistMgr does the work later).
* ReturnValue 21 (ERROR_NOT_READY, "The device is not ready") on a STORAGE_COMPRESS package is
  read as its source medium not being ready yet: an operator mounts it, then the refresh
  succeeds. The ConfigMgr 2007 SDK says such a refresh fails while the medium is not ready; the
  value 21 is this project's reading (and our emulator's), not Microsoft's.
* Any other non-zero ReturnValue is a refusal ("failed"), never guessed into a retryable meaning:
  the provider client logs the undocumented value (worker/provider/client.py).
* A failure of an SMS Provider method comes back as a WMI fault carrying `SMS_ExtendedStatus`.
  WBEM_E_FAILED on a STORAGE_COMPRESS package is "medium not ready" only when the fault or its
  extended status names a device that is not ready (Win32 21 / ERROR_NOT_READY, 0x80070015, or
  Windows' text for it): a WBEM_E_FAILED for another cause (a lost site database) must not be
  retried on the medium schedule of hours.

What every other fault and exception means is the provider client's to decide
(worker/provider/classify.py).
"""

from __future__ import annotations

from typing import Final, Literal

from errors import MediumNotReadyError, ProviderFailureError, RefreshError
from worker.domain.packages import STORAGE_COMPRESS

__all__ = [
    "ERROR_NOT_READY",
    "KNOWN_RETURN_VALUES",
    "WBEM_E_FAILED",
    "RefreshOutcome",
    "error_for_medium_fault",
    "names_device_not_ready",
    "refresh_outcome",
]

RefreshOutcome = Literal["accepted", "medium_not_ready", "failed"]

# WMI's generic failure (WbemErrorEnum, wbemcli.h).
WBEM_E_FAILED: Final = 0x80041001
# Win32 ERROR_NOT_READY, bare and as HRESULT_FROM_WIN32.
ERROR_NOT_READY: Final = 21
_HRESULT_NOT_READY: Final = 0x80070015
# ReturnValues this module gives a meaning to; any other is logged as undocumented by the client.
KNOWN_RETURN_VALUES: Final = frozenset({0, ERROR_NOT_READY})
# How a fault's text names the condition: the constant's name, its HRESULT, Windows' message.
_NOT_READY_MARKERS: Final = ("error_not_ready", "0x80070015", "the device is not ready")


def refresh_outcome(return_value: int, pkg_source_flag: int | None) -> RefreshOutcome:
    """What a RefreshPkgSource ReturnValue means for this package (see the module docstring)."""
    if return_value == 0:
        return "accepted"
    if return_value == ERROR_NOT_READY and pkg_source_flag == STORAGE_COMPRESS:
        return "medium_not_ready"
    return "failed"


def names_device_not_ready(err: RefreshError) -> bool:
    """Whether a fault, or its extended status, names a device that is not ready (Win32 21)."""
    status = err.extended_status
    codes = {err.code, err.wsman_code, err.wmi_code, status.error_code if status is not None else None}
    if codes & {ERROR_NOT_READY, _HRESULT_NOT_READY}:
        return True
    texts = [err.message, status.description if status is not None else None]
    return any(marker in text.lower() for text in texts if text for marker in _NOT_READY_MARKERS)


def error_for_medium_fault(err: RefreshError, pkg_source_flag: int | None) -> RefreshError:
    """A RefreshPkgSource WBEM_E_FAILED fault on a STORAGE_COMPRESS package that names a device
    not ready is MediumNotReadyError; anything else is returned as it is.

    Quota, timeout and HTTP-level failures keep their own meaning (and short retry schedule)
    even on a compressed package, and so does a generic failure for another cause.
    """
    if not isinstance(err, ProviderFailureError) or pkg_source_flag != STORAGE_COMPRESS:
        return err
    if err.wmi_code != WBEM_E_FAILED or not names_device_not_ready(err):
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
