"""`SccmClient.enumerate` over pywinrm and a canned HTTP adapter: paging, and releasing the context.

The adapter plays a provider that pages a fixed list of PackageIDs two at a time; it answers
Enumerate, Pull and Release the way WinRM does (RelatesTo set to the request's MessageID).
"""

from __future__ import annotations

import logging
import re

import pytest

from errors import ServerBusyError
from testing.canned_http import CannedAdapter, canned_client, message_id_of

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
CLASS_URI = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_Package"
PACKAGE_IDS = [f"PS1000{n:02X}" for n in range(1, 8)]
PAGE = 2
WQL = "SELECT PackageID FROM SMS_Package"
_CONTEXT_RE = re.compile(rb"<n:EnumerationContext>([^<]*)</n:EnumerationContext>")


class PagingProvider:
    """Answers Enumerate / Pull / Release; contexts are `ctx-<next position>`; records actions."""

    def __init__(self, *, release_status: int = 200, fail_pull_at: int | None = None) -> None:
        self.actions: list[str] = []
        self.released: list[str] = []
        self.release_status = release_status
        self.fail_pull_at = fail_pull_at

    def respond(self, request: bytes) -> tuple[int, bytes]:
        relates_to = message_id_of(request)
        if b"<n:Enumerate>" in request:
            self.actions.append("Enumerate")
            return 200, self._page(relates_to, 0, "EnumerateResponse", items_ns="w")
        context = self._context(request)
        if b"<n:Pull>" in request:
            self.actions.append("Pull")
            position = int(context.removeprefix("ctx-"))
            if position == self.fail_pull_at:
                return 503, b"<html>Service Unavailable</html>"
            return 200, self._page(relates_to, position, "PullResponse", items_ns="n")
        self.actions.append("Release")
        self.released.append(context)
        body = f'<n:ReleaseResponse xmlns:n="{NS_ENUMERATION}"/>' if self.release_status == 200 else "<s:Fault/>"
        return self.release_status, self._envelope(relates_to, body)

    @staticmethod
    def _context(request: bytes) -> str:
        found = _CONTEXT_RE.search(request)
        assert found is not None, "Pull / Release without a context"
        return found.group(1).decode()

    def _page(self, relates_to: str, position: int, response: str, *, items_ns: str) -> bytes:
        ids = PACKAGE_IDS[position : position + PAGE]
        following = position + len(ids)
        end = following >= len(PACKAGE_IDS)
        items = "".join(
            f'<p:SMS_Package xmlns:p="{CLASS_URI}"><p:PackageID>{pid}</p:PackageID></p:SMS_Package>' for pid in ids
        )
        tail = f"<{items_ns}:EndOfSequence/>" if end else ""
        context = "" if end else f"ctx-{following}"
        body = (
            f'<n:{response} xmlns:n="{NS_ENUMERATION}" xmlns:w="{NS_WSMAN}">'
            f"<n:EnumerationContext>{context}</n:EnumerationContext>"
            f"<{items_ns}:Items>{items}</{items_ns}:Items>{tail}</n:{response}>"
        )
        return self._envelope(relates_to, body)

    @staticmethod
    def _envelope(relates_to: str, body: str) -> bytes:
        return (
            f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDRESSING}"><s:Header>'
            f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
        ).encode()


def test_enumeration_pages_through_to_end_of_sequence_without_a_release() -> None:
    """All items come back, one Pull per further page, and a finished enumeration sends no Release."""
    provider = PagingProvider()
    client = canned_client(CannedAdapter(respond=provider.respond))

    found = [item.get("PackageID") for item in client.enumerate(WQL, page_size=PAGE)]

    assert found == PACKAGE_IDS
    assert provider.actions == ["Enumerate", "Pull", "Pull", "Pull"]


def test_stopping_early_releases_the_open_context() -> None:
    """A caller that closes the generator before EndOfSequence gets the server's context released."""
    provider = PagingProvider()
    client = canned_client(CannedAdapter(respond=provider.respond))

    items = client.enumerate(WQL, page_size=PAGE)
    first_three = [next(items).get("PackageID") for _ in range(3)]
    items.close()

    assert first_three == PACKAGE_IDS[:3]
    assert provider.actions == ["Enumerate", "Pull", "Release"]
    assert provider.released == ["ctx-4"]


def test_a_failed_release_is_logged_at_debug_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A Release the provider refuses does not turn closing the generator into an error."""
    provider = PagingProvider(release_status=500)
    client = canned_client(CannedAdapter(respond=provider.respond))

    items = client.enumerate(WQL, page_size=PAGE)
    next(items)
    with caplog.at_level(logging.DEBUG, logger="worker.provider.client"):
        items.close()

    assert provider.actions == ["Enumerate", "Release"]
    assert any("Release" in record.getMessage() and record.levelno == logging.DEBUG for record in caplog.records)


def test_a_failed_pull_raises_its_error_and_releases_the_context() -> None:
    """A Pull that fails ends the enumeration with its error; the context it left open is released."""
    provider = PagingProvider(fail_pull_at=2)
    client = canned_client(CannedAdapter(respond=provider.respond))

    items = client.enumerate(WQL, page_size=PAGE)
    seen = [next(items).get("PackageID"), next(items).get("PackageID")]
    with pytest.raises(ServerBusyError):
        next(items)

    assert seen == PACKAGE_IDS[:2]
    assert provider.actions == ["Enumerate", "Pull", "Release"]
    assert provider.released == ["ctx-2"]
