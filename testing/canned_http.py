"""A requests transport adapter standing in for the network in pure unit tests.

pywinrm's real `Protocol` and `requests.Session` run unchanged above it: only the socket is
replaced by one canned reply, and every request body is recorded. Socket-level behaviour is
tested against the emulator instead (tests/integration).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter

__all__ = ["CannedAdapter"]


class CannedAdapter(BaseAdapter):
    """Answers every request with `status` + `body`; records the request bodies."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.body = body
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
        self.bodies.append(body if isinstance(body, bytes) else str(body or "").encode("utf-8"))
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(self.body),
            headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
            status=self.status,
            preload_content=False,
        )
        return HTTPAdapter().build_response(request, raw)

    def close(self) -> None:
        """Nothing to release."""
