"""The operations the provider answers, as the call log and WMI name them, and its reply types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from emulator.wsman.namespaces import ACTION_ENUMERATE, ACTION_GET, ACTION_PULL, ACTION_PUT

__all__ = ["OPERATION_BY_ACTION", "WMI_OPERATION", "Operation", "Reject", "WsmanReply"]

Operation = Literal["get", "invoke", "enumerate", "pull", "put"]

OPERATION_BY_ACTION: Final[dict[str, Operation]] = {
    ACTION_GET: "get",
    ACTION_ENUMERATE: "enumerate",
    ACTION_PULL: "pull",
    ACTION_PUT: "put",
}
# The WMI operation behind each (what __ExtendedStatus.Operation says).
WMI_OPERATION: Final[dict[Operation, str]] = {
    "get": "GetObject",
    "invoke": "ExecMethod",
    "enumerate": "ExecQuery",
    "pull": "ExecQuery",
    "put": "PutInstance",
}


@dataclass(frozen=True, slots=True)
class WsmanReply:
    status: int  # 200, or 500 with a SOAP fault, as WinRM does
    body: bytes  # UTF-8 SOAP envelope


class Reject(Exception):  # noqa: N818 - control flow, not an error: carries the fault reply
    """Raised while answering a request to answer with a fault at once."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body
