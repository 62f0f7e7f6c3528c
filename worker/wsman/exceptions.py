"""What the WS-Man layer raises: protocol facts, not decisions (`worker.provider.classify` decides).

* `MalformedReply`: a reply that is not XML, not SOAP, over a parsing limit, carries a DTD, or
  is not the reply we asked for (wrong RelatesTo, Action or body).
* `FaultReply`: a reply whose Body holds a SOAP Fault, at any HTTP status (a 200 too).
* `EnvelopeValueError`: a value a request envelope or resource URI cannot be built from.
"""

from __future__ import annotations

from worker.wsman.faultinfo import FaultInfo

__all__ = ["EnvelopeValueError", "FaultReply", "MalformedReply", "WsmanError"]


class WsmanError(Exception):
    """Root of the WS-Man layer's own exceptions."""


class MalformedReply(WsmanError, ValueError):  # noqa: N818 - names the reply it carries, like FaultReply
    """A reply we cannot parse or must not trust."""


class EnvelopeValueError(WsmanError, ValueError):
    """A request value no envelope or resource URI can carry."""


class FaultReply(WsmanError):  # noqa: N818 - a provider answer, not an error of ours
    """A SOAP Fault the provider answered; `http_status` is None when not known (a 200 reply)."""

    def __init__(self, fault: FaultInfo, *, http_status: int | None = None) -> None:
        super().__init__(fault.subcode or fault.code or "SOAP fault")
        self.fault = fault
        self.http_status = http_status
