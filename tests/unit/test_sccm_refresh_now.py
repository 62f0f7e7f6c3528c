"""RefreshNow through the whole client path (`SccmClient.refresh_now` -> pywinrm -> a canned HTTP
adapter): a NAL path's quotes, brackets, backslashes and markup reach the Put's selector as text,
never as XML; a hostile NAL path is refused before anything is sent, never a traceback."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from errors import InvalidRequestError
from testing.canned_http import CannedAdapter, canned_client, message_id_of
from worker.wsman.namespaces import ACTION_PUT_RESPONSE

NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"


def _put_response(request: bytes) -> tuple[int, bytes]:
    reply = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header>'
        f"<a:Action>{ACTION_PUT_RESPONSE}</a:Action>"
        f"<a:RelatesTo>{message_id_of(request)}</a:RelatesTo></s:Header><s:Body/></s:Envelope>"
    )
    return 200, reply.encode()


def _selectors(envelope: bytes) -> dict[str, str]:
    root = ET.fromstring(envelope)
    return {sel.get("Name", ""): sel.text or "" for sel in root.iter(f"{{{NS_WSMAN}}}Selector")}


def test_a_nal_path_with_quotes_brackets_backslashes_and_markup_is_one_selector_value() -> None:
    """The Put names exactly the DP read from the provider: its NAL path, escaped as XML text."""
    nal = '["Display=\\\\DP01.corp\\"]MSWNET:["SMS_SITE=PS1</w:Selector><x a=\'1\' & ]\\\\DP01.corp\\'
    adapter = CannedAdapter(respond=_put_response)
    canned_client(adapter).refresh_now("PS100012", nal, dp_site_code="PS2")
    [sent] = adapter.bodies
    assert _selectors(sent) == {"PackageID": "PS100012", "ServerNALPath": nal, "SiteCode": "PS2"}
    assert b"<x a=" not in sent and b"<p:RefreshNow>true</p:RefreshNow>" in sent


@pytest.mark.parametrize(
    "nal",
    [
        '["Display=\\\\DP01\\"]MSWNET:["SMS_SITE=PS1"]\\\\DP01\\\x00',  # a control character
        "\\\\" + "D" * 600 + "\\",  # past 512 characters
        '["Display="]MSWNET:["SMS_SITE=PS1"]',  # names no server
        "",
    ],
)
def test_a_hostile_nal_path_is_refused_before_anything_is_sent(nal: str) -> None:
    adapter = CannedAdapter(respond=_put_response)
    with pytest.raises(InvalidRequestError, match="invalid NAL path"):
        canned_client(adapter).refresh_now("PS100012", nal)
    assert adapter.bodies == []
