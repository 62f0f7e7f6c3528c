"""Hostile and odd provider replies through the whole client path: `SccmClient` -> `ProviderTransport`
-> unmodified pywinrm -> a canned HTTP adapter. Each reply is the input that triggered a defect.

Memory is measured with tracemalloc around the call only (the reply bytes are built before).
"""

from __future__ import annotations

import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from errors import (
    AuthError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    ProviderFailureError,
    QuotaError,
    RefreshError,
    ServerBusyError,
)
from testing.canned_http import CannedAdapter, canned_client, message_id_of

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"
NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
CLASS_URI = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_DriverPackage"
MB = 1024 * 1024

T = TypeVar("T")


def _envelope(body: str, relates_to: str, *, prolog: str = "") -> str:
    return (
        f'{prolog}<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDRESSING}"><s:Header>'
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def _package(name: str = "Drivers") -> str:
    return (
        f'<p:SMS_DriverPackage xmlns:p="{CLASS_URI}"><p:PackageID>PS100012</p:PackageID>'
        f"<p:Name>{name}</p:Name><p:PkgSourceFlag>2</p:PkgSourceFlag></p:SMS_DriverPackage>"
    )


def _answering(body: str, *, status: int = 200, prolog: str = "", encoding: str = "utf-8") -> CannedAdapter:
    """An adapter answering each request with `body` in an envelope relating to that request."""

    def respond(request: bytes) -> tuple[int, bytes]:
        return status, _envelope(body, message_id_of(request), prolog=prolog).encode(encoding)

    return CannedAdapter(respond=respond)


def _peak_bytes(call: Callable[[], T]) -> tuple[T | BaseException, int]:
    """What `call` returned or raised, and the peak memory traced while it ran."""
    tracemalloc.start()
    try:
        outcome: T | BaseException = call()
    except Exception as exc:
        outcome = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, peak


def _get(adapter: CannedAdapter) -> Callable[[], object]:
    client = canned_client(adapter)
    return lambda: client.get_package("SMS_DriverPackage", "PS100012")


# --- DTDs are refused inside the parser, in every encoding ------------------------------


def test_a_dtd_after_a_long_leading_comment_is_refused_within_a_memory_bound() -> None:
    """A 5 KB comment, then a DTD whose 80 KB entity is referenced 90 times: refused, no 7 MB property."""
    entity = "A" * 80_000
    prolog = f'<!--{"x" * 5000}--><!DOCTYPE s:Envelope [<!ENTITY e "{entity}">]>'
    adapter = _answering(_package(name="&e;" * 90), prolog=prolog)

    outcome, peak = _peak_bytes(_get(adapter))

    assert isinstance(outcome, ProtocolError) and "DTD" in outcome.message
    assert peak < 4 * MB


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_reply_with_a_dtd_is_refused(encoding: str) -> None:
    """A UTF-16 reply (with or without a BOM) carrying a DTD is refused like a UTF-8 one."""
    prolog = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE s:Envelope [<!ENTITY a "aaaaaaaaaa">]>'
    adapter = _answering(_package(name="&a;&a;"), prolog=prolog, encoding=encoding)

    with pytest.raises(ProtocolError, match="DTD"):
        _get(adapter)()


def test_a_latin1_reply_without_a_dtd_still_parses() -> None:
    """Declared encodings other than UTF-8 are read (a Latin-1 name comes back intact)."""
    prolog = '<?xml version="1.0" encoding="iso-8859-1"?>'
    adapter = _answering(_package(name="Pilotes \u00e9cran"), prolog=prolog, encoding="latin-1")

    package = canned_client(adapter).get_package("SMS_DriverPackage", "PS100012")

    assert package.name == "Pilotes \u00e9cran"


# --- depth, element count and size are bounded ------------------------------------------


def _nested(levels: int) -> str:
    return "<a>" * levels + "</a>" * levels


def _siblings(count: int) -> str:
    return f'<p:SMS_DriverPackage xmlns:p="{CLASS_URI}">' + "<p:X/>" * count + "</p:SMS_DriverPackage>"


@pytest.mark.parametrize(
    ("body", "bound_bytes"),
    [
        # Just under the size cap: parsing must stop early, at the depth / element limit.
        pytest.param(_nested(140_000), 8 * MB, id="140k-nested-1MB"),
        pytest.param(_siblings(160_000), 8 * MB, id="160k-siblings-1MB"),
        # The reported inputs (16 MB of 2.3 M nested or 2.7 M sibling elements): refused by size. The
        # bound covers the 16 MB body requests reads and the adapter's copy of it, not the tree.
        pytest.param(_nested(2_300_000), 48 * MB, id="2.3M-nested-16MB"),
        pytest.param(_siblings(2_700_000), 48 * MB, id="2.7M-siblings-16MB"),
    ],
)
def test_huge_trees_are_refused_within_a_memory_bound(body: str, bound_bytes: int) -> None:
    """Millions of nested or sibling elements end as ProtocolError, using a bounded amount of memory."""
    outcome, peak = _peak_bytes(_get(_answering(body)))

    assert isinstance(outcome, ProtocolError), outcome
    assert peak < bound_bytes


# --- HTTP error bodies never reach pywinrm's stdlib parser -----------------------------


@pytest.fixture
def stdlib_parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Records every call to the stdlib's unguarded `ElementTree.fromstring` (pywinrm's Protocol uses it)."""
    calls: list[object] = []
    original = ET.fromstring

    def recording(text: str | bytes, parser: ET.XMLParser | None = None) -> ET.Element:
        calls.append(text)
        return original(text, parser)

    monkeypatch.setattr(ET, "fromstring", recording)
    yield calls


def test_an_http_500_fault_is_read_by_our_parser_only(stdlib_parses: list[object]) -> None:
    """A SOAP fault at HTTP 500 still means what it says, and the stdlib parser never sees it."""
    adapter = CannedAdapter((CAPTURES / "omi_wmi_not_found.xml").read_bytes(), status=500)

    with pytest.raises(NotFoundError) as caught:
        _get(adapter)()

    assert caught.value.http_status == 500
    assert stdlib_parses == []


def test_a_dtd_in_an_http_500_body_is_not_trusted_and_costs_little(stdlib_parses: list[object]) -> None:
    """An entity-expanding fault body at HTTP 500 is no fault: the status decides, memory stays low."""
    entity = "w:QuotaLimit " * 6_000
    prolog = f'<!--{"x" * 5000}--><!DOCTYPE s:Envelope [<!ENTITY q "{entity}">]>'
    reason = f"<s:Reason><s:Text>{'&q;' * 90}</s:Text></s:Reason>"
    body = f"<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>{reason}</s:Fault>"
    adapter = CannedAdapter(_envelope(body, "uuid:x", prolog=prolog).encode(), status=500)

    outcome, peak = _peak_bytes(_get(adapter))

    assert type(outcome) is ProviderFailureError and outcome.http_status == 500
    assert stdlib_parses == []
    assert peak < 4 * MB


def test_a_utf16_quota_fault_at_http_500_is_a_quota_error() -> None:
    """pywinrm cannot decode a UTF-16 error body; its raw bytes are still read as the quota fault."""
    capture = (CAPTURES / "winrb_quota_shells.xml").read_text(encoding="utf-8")
    adapter = CannedAdapter(('<?xml version="1.0" encoding="utf-16"?>' + capture).encode("utf-16"), status=500)

    with pytest.raises(QuotaError) as caught:
        _get(adapter)()

    assert caught.value.http_status == 500 and caught.value.retryable


def test_an_undecodable_http_503_without_a_fault_maps_by_status() -> None:
    """A non-UTF-8 error body that is not a fault is classified by its HTTP status."""
    adapter = CannedAdapter("<html>Service Unavailable</html>".encode("utf-16"), status=503)

    with pytest.raises(ServerBusyError) as caught:
        _get(adapter)()

    assert caught.value.http_status == 503


# --- Win32 errors that cannot heal are permanent --------------------------------------


def _win32_fault(code: str, subcode: str = "w:InternalError") -> str:
    return (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Body><s:Fault>'
        f"<s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        '<s:Reason><s:Text xml:lang="en-US">The parameter is incorrect. </s:Text></s:Reason>'
        '<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        f'Code="{code}" Machine="sccm01"><f:Message>The parameter is incorrect. </f:Message>'
        "</f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>"
    )


def test_invalid_parameter_is_a_permanent_invalid_request() -> None:
    """`w:InvalidParameter` (Win32 87) is an invalid request, failed at once, not retried for an hour."""
    adapter = CannedAdapter(_win32_fault("87", subcode="w:InvalidParameter").encode(), status=500)

    with pytest.raises(RefreshError) as caught:
        _get(adapter)()

    assert type(caught.value) is InvalidRequestError and not caught.value.retryable
    assert caught.value.wsman_code == 87


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("2147942487", InvalidRequestError),  # 0x80070057 E_INVALIDARG / ERROR_INVALID_PARAMETER
        ("2147942402", NotFoundError),  # 0x80070002 ERROR_FILE_NOT_FOUND
        ("2147942403", NotFoundError),  # 0x80070003 ERROR_PATH_NOT_FOUND
        ("-2147024773", InvalidRequestError),  # 0x8007007B ERROR_INVALID_NAME, as a signed HRESULT
        ("2147943726", AuthError),  # 0x8007052E ERROR_LOGON_FAILURE
        ("1909", AuthError),  # ERROR_ACCOUNT_LOCKED_OUT, bare
        ("2147942414", ServerBusyError),  # 0x8007000E E_OUTOFMEMORY: transient
        ("2147944122", ProviderFailureError),  # 0x800706BA RPC_S_SERVER_UNAVAILABLE: transient
        ("2147942453", ProviderFailureError),  # 0x80070035 ERROR_BAD_NETPATH: a file server coming back
    ],
)
def test_win32_hresults_map_by_whether_they_can_heal(code: str, error_class: type[RefreshError]) -> None:
    """0x8007xxxx codes that cannot heal are permanent; those that can stay transient."""
    adapter = CannedAdapter(_win32_fault(code).encode(), status=500)

    with pytest.raises(RefreshError) as caught:
        _get(adapter)()

    assert type(caught.value) is error_class


# --- ReturnValues Microsoft does not document ----------------------------------------------


@pytest.mark.parametrize(("return_value", "logged"), [(0, False), (21, False), (7, True), (-2147217407, True)])
def test_an_undocumented_return_value_is_logged_and_handed_back_unmapped(
    caplog: pytest.LogCaptureFixture, return_value: int, logged: bool
) -> None:
    body = (
        f'<p:RefreshPkgSource_OUTPUT xmlns:p="{CLASS_URI}"><p:ReturnValue>{return_value}</p:ReturnValue>'
        "</p:RefreshPkgSource_OUTPUT>"
    )
    client = canned_client(_answering(body))
    with caplog.at_level("WARNING", logger="worker.provider.client"):
        assert client.refresh("SMS_DriverPackage", "PS100012") == return_value
    warnings = [record.getMessage() for record in caplog.records if "undocumented ReturnValue" in record.getMessage()]
    assert warnings == (
        [
            f"RefreshPkgSource of PS100012 at site PS1 returned {return_value}: an undocumented "
            "ReturnValue, read as a refusal"
        ]
        if logged
        else []
    )
