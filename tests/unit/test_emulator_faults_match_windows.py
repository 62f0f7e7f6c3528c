"""The emulator's replies against real Windows captures (tests/fixtures/windows/README.md).

For every fault kind with a capture: the unmodified pywinrm client turns ours into the same
exception type with the same fault_code, fault_subcode, wsman_fault_code and wmierror_code as
the capture, the reason has the same shape, and our XML has the same element structure (tag
paths, ignoring text and attribute values). Success replies (Invoke, Enumerate, Pull) are
compared for structure too, down to the instance element.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import xmltodict  # type: ignore[import-untyped]  # xmltodict publishes no type stubs
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol
from winrm.transport import Transport

from emulator.settings import EmulatorSettings
from emulator.sms.packages import STORAGE_DIRECT
from emulator.sms.provider import Provider

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"
USER = "LAB\\sccm-svc"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WQL = "http://schemas.microsoft.com/wbem/wsman/1/WQL"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
ACTION_PULL = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
# Namespaces that name a WMI class (instance, __ExtendedStatus, MSFT_WmiError) differ by
# namespace and class between a capture and us; they compare as one "class" namespace.
_CLASS_NAMESPACE_RE = re.compile(
    r"^(http://schemas\.microsoft\.com/wbem/wsman/1/wmi/|http://schemas\.dmtf\.org/wbem/wscim/1/cim-schema/2/)"
)
_ITEMS = {
    "{http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd}Items",
    "{http://schemas.xmlsoap.org/ws/2004/09/enumeration}Items",
}
# Headers a Windows capture may carry that a reply need not (diagnostics, robust connections).
_OPTIONAL_HEADERS = {"{http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd}ActivityId"}


def class_uri(class_name: str) -> str:
    return f"http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/{class_name}"


def request(action: str, uri: str, *, selectors: dict[str, str] | None = None, body: Any = None) -> bytes:
    """A request built like pywinrm users build custom ones."""
    protocol = Protocol("http://windows-host:5985/wsman", transport="basic", username="u", password="p")
    content = protocol.build_wsman_header(action, uri, message_id=uuid.uuid4())
    if selectors:
        content["env:Header"]["w:SelectorSet"] = {
            "w:Selector": [{"@Name": name, "#text": value} for name, value in selectors.items()]
        }
    content["env:Body"] = body or {}
    return str(xmltodict.unparse({"env:Envelope": content})).encode()


def enumerate_request(query: str, max_elements: int) -> bytes:
    body = {
        "n:Enumerate": {
            "w:OptimizeEnumeration": None,
            "w:MaxElements": str(max_elements),
            "w:Filter": {"@Dialect": WQL, "#text": query},
        }
    }
    return request(ACTION_ENUMERATE, class_uri("*"), body=body)


def pywinrm_error(xml_text: str) -> Exception:
    """What pywinrm 0.5 raises for an HTTP 500 with this body, through Protocol.send_message."""

    class FaultTransport:
        def send_message(self, message: str) -> bytes:
            raise WinRMTransportError("http", 500, xml_text)

    protocol = Protocol("http://windows-host:5985/wsman", transport="basic", username="u", password="p")
    protocol.transport = cast(Transport, FaultTransport())
    with pytest.raises((WSManFaultError, WinRMOperationTimeoutError)) as caught:
        protocol.send_message("<unused/>")
    return caught.value


def attributes(error: Exception) -> dict[str, Any]:
    """The attributes a client classifies on; the reason with whitespace collapsed."""
    if not isinstance(error, WSManFaultError):
        return {"type": type(error).__name__}
    return {
        "type": type(error).__name__,
        "code": error.code,
        "fault_code": error.fault_code,
        "fault_subcode": error.fault_subcode,
        "wsman_fault_code": error.wsman_fault_code,
        "wmierror_code": error.wmierror_code,
        "reason": " ".join(error.reason.split()),
    }


def _tag(element: ET.Element) -> str:
    namespace, _, local = element.tag[1:].partition("}")
    if _CLASS_NAMESPACE_RE.match(namespace):
        namespace = "class"
    if local.endswith("_OUTPUT"):
        local = "*_OUTPUT"
    return f"{{{namespace}}}{local}"


def tag_paths(element: ET.Element, prefix: str = "") -> set[str]:
    """Every element's path of (normalised) tags; instances under Items count as one leaf."""
    path = f"{prefix}/{_tag(element)}"
    if element.tag in _ITEMS:
        return {path} | {f"{path}/{{instance}}" for _ in element[:1]}
    paths = {path}
    for child in element:
        paths |= tag_paths(child, path)
    return paths


def assert_same_structure(ours: bytes, capture: str) -> None:
    """Same body structure; every header the capture has, we have too."""
    our_root, their_root = ET.fromstring(ours), ET.fromstring(capture)
    our_body, their_body = our_root.find(f"{{{SOAP}}}Body"), their_root.find(f"{{{SOAP}}}Body")
    assert our_body is not None and their_body is not None
    assert tag_paths(our_body) == tag_paths(their_body)
    our_headers = {child.tag for child in our_root.find(f"{{{SOAP}}}Header") or []}
    their_headers = {child.tag for child in their_root.find(f"{{{SOAP}}}Header") or []}
    assert their_headers - _OPTIONAL_HEADERS <= our_headers


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def provider() -> Provider:
    return Provider(EmulatorSettings(package_count=40))


def direct_package(provider: Provider) -> tuple[str, str]:
    summary = next(s for s in provider.packages() if s["PkgSourceFlag"] == STORAGE_DIRECT)
    return str(summary["PackageID"]), str(summary["class"])


# --------------------------------------------------------------------------- fault kinds


def _timed_out(provider: Provider) -> bytes:
    return provider.fault_reply("timeout_fault", request(ACTION_GET, class_uri("SMS_Package"))).body


def _schema_validation(provider: Provider) -> bytes:
    body = {
        "n:Enumerate": {"w:MaxElements": "many", "w:Filter": {"@Dialect": WQL, "#text": "SELECT * FROM SMS_Package"}}
    }
    return provider.handle(request(ACTION_ENUMERATE, class_uri("*"), body=body), user=USER).body


def _not_found(provider: Provider) -> bytes:
    missing = request(ACTION_GET, class_uri("SMS_Package"), selectors={"PackageID": "PS1FFFFF"})
    return provider.handle(missing, user=USER).body


def _invalid_class(provider: Provider) -> bytes:
    return provider.handle(enumerate_request('Select * from SMS_Packagea where Name="x"', 10), user=USER).body


def _invalid_selectors(provider: Provider) -> bytes:
    wrong = request(ACTION_GET, class_uri("SMS_Package"), selectors={"Name": "x"})
    return provider.handle(wrong, user=USER).body


def _quota(provider: Provider) -> bytes:
    return provider.fault_reply("quota_fault", request(ACTION_GET, class_uri("SMS_Package"))).body


FAULT_CASES: list[tuple[str, str, Callable[[Provider], bytes]]] = [
    ("timed out", "pywinrm_timed_out.xml", _timed_out),
    ("schema validation", "pypsrp_schema_validation.xml", _schema_validation),
    ("instance not found", "omi_wmi_not_found.xml", _not_found),
    ("invalid class in WQL", "winrb_wmi_invalid_class.xml", _invalid_class),
    ("invalid selectors", "pypsrp_invalid_selectors.xml", _invalid_selectors),
]


@pytest.mark.parametrize(("kind", "capture", "produce"), FAULT_CASES, ids=[case[0] for case in FAULT_CASES])
def test_pywinrm_reads_our_fault_like_the_windows_capture(
    provider: Provider, kind: str, capture: str, produce: Callable[[Provider], bytes]
) -> None:
    """Same exception type and attributes as the capture, reason included."""
    ours, theirs = produce(provider), fixture(capture)
    assert attributes(pywinrm_error(ours.decode())) == attributes(pywinrm_error(theirs))


@pytest.mark.parametrize(("kind", "capture", "produce"), FAULT_CASES, ids=[case[0] for case in FAULT_CASES])
def test_our_fault_has_the_element_structure_of_the_windows_capture(
    provider: Provider, kind: str, capture: str, produce: Callable[[Provider], bytes]
) -> None:
    """Same tag paths under s:Body; every header of the capture is present."""
    assert_same_structure(produce(provider), fixture(capture))


def test_quota_fault_matches_the_captured_quota_faults(provider: Provider) -> None:
    """Structure and codes of WinRM's quota fault; error_Code of the operations quota.

    The structural capture is the shells quota (2150859173); pywinrm's own test carries the
    operations quota (2150859174) we emulate, with a w:InternalError subcode where the shells
    capture (and the WS-Management spec) say w:QuotaLimit, which we follow.
    """
    ours = attributes(pywinrm_error(_quota(provider).decode()))
    shells = attributes(pywinrm_error(fixture("winrb_quota_shells.xml")))
    operations = attributes(pywinrm_error(fixture("pywinrm_quota_operations.xml")))
    for key in ("type", "code", "fault_code", "fault_subcode", "wsman_fault_code"):
        assert ours[key] == shells[key]
    assert ours["wmierror_code"] == operations["wmierror_code"] == 0x803381A6
    assert ours["reason"].startswith("The WS-Management service cannot process the request.")
    assert_same_structure(_quota(provider), fixture("winrb_quota_shells.xml"))


def test_quota_fault_has_no_relates_to_like_both_captures(provider: Provider) -> None:
    """Both captured quota faults carry no RelatesTo (WinRM refuses before reading the request); ours neither."""
    headers = [
        ET.fromstring(xml).find(f"{{{SOAP}}}Header")
        for xml in (_quota(provider), fixture("winrb_quota_shells.xml"), fixture("pywinrm_quota_operations.xml"))
    ]
    relates = "{http://schemas.xmlsoap.org/ws/2004/08/addressing}RelatesTo"
    assert all(header is not None and header.find(relates) is None for header in headers)


# --------------------------------------------------------------------------- success replies


def test_invoke_reply_has_the_structure_of_a_windows_custom_action_reply(provider: Provider) -> None:
    """`<Method>_OUTPUT` with ReturnValue, like CIM_DataFile.Delete's captured reply."""
    package_id, class_name = direct_package(provider)
    uri = class_uri(class_name)
    body = {"p:RefreshPkgSource_INPUT": {"@xmlns:p": uri}}
    reply = provider.handle(
        request(f"{uri}/RefreshPkgSource", uri, selectors={"PackageID": package_id}, body=body), user=USER
    )
    assert reply.status == 200
    assert_same_structure(reply.body, fixture("winrb_invoke_output.xml"))


def test_enumerate_and_pull_replies_have_the_structure_of_windows_ones(provider: Provider) -> None:
    """First page in EnumerateResponse (context, w:Items); last PullResponse (n:Items, EndOfSequence)."""
    query = "SELECT * FROM SMS_PackageBaseclass"
    first = provider.handle(enumerate_request(query, max_elements=2), user=USER)
    assert_same_structure(first.body, fixture("winrb_enumerate_response.xml"))
    context = ET.fromstring(first.body).findtext(".//{*}EnumerationContext")
    assert context
    pull = request(
        ACTION_PULL, class_uri("*"), body={"n:Pull": {"n:EnumerationContext": context, "n:MaxElements": "1000"}}
    )
    last = provider.handle(pull, user=USER)
    assert_same_structure(last.body, fixture("winrb_pull_response.xml"))
