"""What an answer to RefreshPkgSource means for the package it was asked of.

Two rules of the ConfigMgr SDK, pure: a non-zero ReturnValue, or WMI's generic failure, on a
STORAGE_COMPRESS package means its source medium is not ready yet (an operator mounts it, then
the refresh succeeds), not that the refresh failed. What every other fault and exception means
is the provider client's to decide (worker/provider/classify.py).
"""

from __future__ import annotations

from typing import Final, Literal

from errors import MediumNotReadyError, ProviderFailureError, RefreshError
from worker.domain.packages import STORAGE_COMPRESS

__all__ = ["WBEM_E_FAILED", "RefreshOutcome", "error_for_medium_fault", "refresh_outcome"]

RefreshOutcome = Literal["accepted", "medium_not_ready", "failed"]

# WMI's generic failure (WbemErrorEnum, wbemcli.h).
WBEM_E_FAILED: Final = 0x80041001


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
