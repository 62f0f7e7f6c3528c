"""What a WS-Man fault says, as protocol values: codes, subcode, reason, provider fault, status.

Facts only: what the fault means to the worker (retry or not) is decided in `worker.provider.classify`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExtendedStatus", "FaultInfo", "ProviderFault"]


@dataclass(frozen=True)
class ExtendedStatus:
    """`__ExtendedStatus` / `SMS_ExtendedStatus` from a WMI fault's `f:ExtendedError`."""

    class_name: str
    description: str | None = None
    error_code: int | None = None
    operation: str | None = None
    parameter_info: str | None = None
    provider_name: str | None = None
    status_code: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_name,
            "description": self.description,
            "error_code": self.error_code,
            "operation": self.operation,
            "parameter_info": self.parameter_info,
            "provider_name": self.provider_name,
            "status_code": self.status_code,
        }


@dataclass(frozen=True)
class ProviderFault:
    """`f:ProviderFault`: which plug-in failed and its own WSManFault."""

    provider: str | None = None
    path: str | None = None
    wsman_code: int | None = None
    machine: str | None = None
    message: str | None = None
    # Some plug-ins put plain text in the ProviderFault instead of an inner WSManFault.
    text: str | None = None


@dataclass(frozen=True)
class FaultInfo:
    """Everything a WS-Man fault says, parsed; `code`/`subcode` keep the reply's own QName text."""

    code: str | None = None
    subcode: str | None = None
    reason: str | None = None
    wsman_code: int | None = None
    machine: str | None = None
    message: str | None = None
    provider_fault: ProviderFault | None = None
    wmi_error_code: int | None = None
    extended_status: ExtendedStatus | None = None
    fault_detail: str | None = None
    wmi_error: dict[str, str | None] = field(default_factory=dict)

    @property
    def subcode_name(self) -> str | None:
        """The local part of the subcode (`w:TimedOut` -> `TimedOut`)."""
        return _local_qname(self.subcode)

    @property
    def code_name(self) -> str | None:
        """The local part of the code (`s:Receiver` -> `Receiver`)."""
        return _local_qname(self.code)

    @property
    def text(self) -> str:
        """The most specific human text the fault carries."""
        provider = self.provider_fault
        candidates = (
            provider.message if provider else None,
            self.message,
            self.reason,
            provider.text if provider else None,
            self.wmi_error.get("Message"),
        )
        return next((text for text in candidates if text), "no fault text")

    def codes(self) -> list[int]:
        """The numeric codes, most specific first, without repeats."""
        ordered = (
            self.wmi_error_code,
            self.provider_fault.wsman_code if self.provider_fault else None,
            self.wsman_code,
        )
        return list(dict.fromkeys(code for code in ordered if code is not None))


def _local_qname(value: str | None) -> str | None:
    if not value:
        return None
    # `w:TimedOut`, `{uri}TimedOut` and `uri:TimedOut` (OMI's spelling) all name TimedOut.
    return value.rsplit("}", 1)[-1].rsplit(":", 1)[-1].strip() or None
