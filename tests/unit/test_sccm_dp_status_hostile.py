"""A hostile provider answering DP status reads, through the whole client path (`SccmClient` ->
`ProviderTransport` -> unmodified pywinrm -> a canned HTTP adapter): endless rows, quotes and
brackets and markup in NAL paths, missing properties, unknown States. Refused or bounded, never
a traceback; memory stays bounded while the provider never ends its sequence."""

from __future__ import annotations

import re
import tracemalloc
from xml.sax.saxutils import escape

from testing.canned_http import CannedAdapter, canned_client, canned_reply, message_id_of
from worker.domain.distribution import DpState

NS_ENUMERATION = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
CLASS_URI = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_PackageStatusDistPointsSummarizer"
_IDS_RE = re.compile(rb"PackageID = (?:'|&apos;)([A-Z0-9]{8})")  # the WQL travels XML-escaped
_MB = 1024 * 1024


def _nal(server: str) -> str:
    return f'["Display=\\\\{server}\\"]MSWNET:["SMS_SITE=PS1"]\\\\{server}\\'


def _row(package_id: str, nal: str | None, state: str | None = "0", version: str | None = "3") -> str:
    def prop(name: str, value: str | None) -> str:
        if value is None:
            return ""
        return f"<p:{name}>{escape(value)}</p:{name}>"

    return (
        f'<p:SMS_PackageStatusDistPointsSummarizer xmlns:p="{CLASS_URI}">{prop("PackageID", package_id)}'
        f"{prop('ServerNALPath', nal)}{prop('State', state)}{prop('SourceVersion', version)}"
        "</p:SMS_PackageStatusDistPointsSummarizer>"
    )


class EndlessProvider:
    """Every page full of rows for the packages asked, never EndOfSequence; records Releases."""

    def __init__(self, rows_per_page: int = 500) -> None:
        self.rows_per_page = rows_per_page
        self.actions: list[str] = []
        self._asked: list[str] = []
        self._served = 0

    def respond(self, request: bytes) -> tuple[int, bytes]:
        relates_to = message_id_of(request)
        if b"<n:Enumerate>" in request:
            self.actions.append("Enumerate")
            self._asked = [match.decode() for match in _IDS_RE.findall(request)]
            return 200, self._page(relates_to, "EnumerateResponse", "w")
        if b"<n:Pull>" in request:
            self.actions.append("Pull")
            return 200, self._page(relates_to, "PullResponse", "n")
        self.actions.append("Release")
        return 200, canned_reply(relates_to, f'<n:ReleaseResponse xmlns:n="{NS_ENUMERATION}"/>')

    def _page(self, relates_to: str, response: str, items_ns: str) -> bytes:
        rows = []
        for _ in range(self.rows_per_page):
            self._served += 1
            rows.append(_row(self._asked[self._served % len(self._asked)], _nal(f"DP{self._served:07d}.corp")))
        items = f"<{items_ns}:Items>{''.join(rows)}</{items_ns}:Items>"
        opening = f'<n:{response} xmlns:n="{NS_ENUMERATION}" xmlns:w="{NS_WSMAN}">'
        return canned_reply(
            relates_to, f"{opening}<n:EnumerationContext>ctx</n:EnumerationContext>{items}</n:{response}>"
        )


def test_a_provider_that_never_ends_is_read_up_to_the_bound_then_released() -> None:
    provider = EndlessProvider()
    client = canned_client(CannedAdapter(respond=provider.respond))
    ids = [f"PS1{n:05X}" for n in range(450)]
    tracemalloc.start()
    try:
        batch = client.read_dp_status(ids, max_rows=3_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (len(batch.rows), batch.truncated) == (3_000, True)
    assert provider.actions == ["Enumerate", *["Pull"] * 5, "Release"]
    assert peak < 40 * _MB


def test_hostile_rows_are_refused_one_by_one_and_good_ones_kept() -> None:
    good = _nal("DP01.corp.example")
    rows = [
        _row("PS100001", good),
        _row("PS100001", _nal("DP02.corp.example"), state="42"),  # unknown State: kept as unknown
        _row("PS100001", '<![CDATA["]]>&amp;'),  # markup in a NAL path naming no server
        _row("PS100001", "]\\" * 400),  # too long
        _row("PS100001", None),  # no NAL path
        _row("PS100001", _nal("DP03.corp.example"), state=None),  # no State
        _row("PS100001", _nal("DP04.corp.example"), version="-1"),
        _row("PS1FFFFF", _nal("DP05.corp.example")),  # a package not asked for
        _row("PS100001", good),  # the first row again
    ]

    def respond(request: bytes) -> tuple[int, bytes]:
        body = (
            f'<n:EnumerateResponse xmlns:n="{NS_ENUMERATION}" xmlns:w="{NS_WSMAN}">'
            f"<n:EnumerationContext/><w:Items>{''.join(rows)}</w:Items><w:EndOfSequence/></n:EnumerateResponse>"
        )
        return 200, canned_reply(message_id_of(request), body)

    batch = canned_client(CannedAdapter(respond=respond)).read_dp_status(["PS100001"])
    assert [(row.dp_name, row.state, row.raw_state) for row in batch.rows] == [
        ("DP01.corp.example", DpState.INSTALLED, 0),
        ("DP02.corp.example", None, 42),
    ]
    assert (batch.rejected, batch.duplicates, batch.truncated) == (6, 1, False)
    assert all("Traceback" not in problem and len(problem) < 200 for problem in batch.problems)
