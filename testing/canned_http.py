"""A requests transport adapter standing in for the network in pure unit tests.

pywinrm's real `Protocol` and `requests.Session` run unchanged above it: only the socket is
replaced by canned replies, and every request body is recorded. Socket-level behaviour is
tested against the emulator instead (tests/integration).

`canned_client(adapter)` is the worker's own `SccmClient` + `ProviderTransport` over Basic on
plain HTTP with that adapter mounted on every session the transport builds (it rebuilds one
after each failure), and no in-call retries.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping

import requests
import urllib3
from pydantic import SecretStr
from requests.adapters import BaseAdapter, HTTPAdapter
from winrm.protocol import Protocol

from config.settings import ProviderSettings, RetryPolicy
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport

__all__ = [
    "CANNED_ENDPOINT",
    "CANNED_SITE",
    "CannedAdapter",
    "CannedReply",
    "canned_client",
    "canned_reply",
    "message_id_of",
]

CANNED_ENDPOINT = "http://sccm01.lab.local:5985/wsman"
CANNED_SITE = "PS1"
_CANNED_PASSWORD = "Canned-Only-Pa55word"  # noqa: S105 - never leaves the process
_MESSAGE_ID_RE = re.compile(rb"<a:MessageID>([^<]*)</a:MessageID>")

# A reply is (HTTP status, body), computed from the request body.
CannedReply = tuple[int, bytes]


class CannedAdapter(BaseAdapter):
    """Answers every request with `status` + `body`, or with what `respond(request body)` returns;
    records the request bodies."""

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        *,
        respond: Callable[[bytes], CannedReply] | None = None,
    ) -> None:
        super().__init__()
        self.status = status
        self.body = body
        self.respond = respond
        self.bodies: list[bytes] = []

    def send(  # noqa: PLR0917 - mirrors requests' BaseAdapter.send
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        body = request.body
        sent = body if isinstance(body, bytes) else str(body or "").encode("utf-8")
        self.bodies.append(sent)
        status, reply = self.respond(sent) if self.respond is not None else (self.status, self.body)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(reply),
            headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
            status=status,
            preload_content=False,
        )
        return HTTPAdapter().build_response(request, raw)

    def close(self) -> None:
        """Nothing to release."""


def canned_reply(relates_to: str, body: str) -> bytes:
    """A SOAP 1.2 reply envelope relating to `relates_to`, holding `body` (trusted test XML)."""
    return (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header>'
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def message_id_of(request_body: bytes) -> str:
    """The MessageID of a request envelope the worker built (to answer with a matching RelatesTo)."""
    found = _MESSAGE_ID_RE.search(request_body)
    if found is None:
        raise AssertionError("request carries no a:MessageID")
    return found.group(1).decode("utf-8")


class _CannedTransport(ProviderTransport):
    def __init__(self, adapter: CannedAdapter, provider: ProviderSettings) -> None:
        super().__init__(CANNED_SITE, provider)
        self._adapter = adapter

    def _build_protocol(self) -> Protocol:
        protocol = super()._build_protocol()
        protocol.transport.build_session().mount("http://", self._adapter)
        return protocol


def canned_client(adapter: CannedAdapter) -> SccmClient:
    """The worker's SMS Provider client, talking through pywinrm to `adapter`, one try per call."""
    provider = ProviderSettings(
        endpoint=CANNED_ENDPOINT,
        transport="basic",
        username="LAB\\svc-sccm",
        password=SecretStr(_CANNED_PASSWORD),
        allow_unencrypted=True,
    )
    no_retries = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0)
    return SccmClient(_CannedTransport(adapter, provider), CANNED_SITE, no_retries)
