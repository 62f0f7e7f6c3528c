"""Provider.handle driven with envelopes built the way pywinrm builds them; replies read back.

Requests come from pywinrm's `Protocol.build_wsman_header` + xmltodict (a client's own path);
faults are fed through pywinrm's `Protocol.send_message` error handling unchanged, by giving a
real Protocol a transport that answers HTTP 500 with our fault body.
"""

from __future__ import annotations

import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, cast

import pytest
import xmltodict  # type: ignore[import-untyped]  # xmltodict publishes no type stubs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol
from winrm.transport import Transport

from emulator.settings import EmulatorSettings
from emulator.sms.packages import STORAGE_COMPRESS, STORAGE_DIRECT, STORAGE_NO_SOURCE
from emulator.sms.provider import ENUMERATION_CONTEXT_TTL_S, Provider
from testing.fixtures_emulator import FakeClock

SITE = "PS1"
USER = "LAB\\sccm-svc"
WQL = "http://schemas.microsoft.com/wbem/wsman/1/WQL"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
ACTION_PULL = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
ACTION_RELEASE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Release"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "n": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "cim": "http://schemas.dmtf.org/wbem/wscim/1/common",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
XSI_NIL = f"{{{NS['xsi']}}}nil"
PROTOCOL = Protocol("http://windows-host:5985/wsman", transport="basic", username="u", password="p")


# --------------------------------------------------------------------------- request builders


def class_uri(class_name: str, site: str = SITE) -> str:
    return f"http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_{site}/{class_name}"


def envelope(
    action: str,
    resource_uri: str,
    *,
    selectors: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    message_id: uuid.UUID | None = None,
) -> bytes:
    """A request exactly as a pywinrm user builds a custom one."""
    content = PROTOCOL.build_wsman_header(action, resource_uri, message_id=message_id)
    if selectors:
        content["env:Header"]["w:SelectorSet"] = {
            "w:Selector": [{"@Name": name, "#text": value} for name, value in selectors.items()]
        }
    content["env:Body"] = body or {}
    return str(xmltodict.unparse({"env:Envelope": content})).encode()


def get_request(class_name: str, package_id: str, **kwargs: Any) -> bytes:
    return envelope(ACTION_GET, class_uri(class_name), selectors={"PackageID": package_id}, **kwargs)


def invoke_request(class_name: str, package_id: str, method: str = "RefreshPkgSource", **kwargs: Any) -> bytes:
    uri = class_uri(class_name)
    body = {f"p:{method}_INPUT": {"@xmlns:p": uri}}
    return envelope(f"{uri}/{method}", uri, selectors={"PackageID": package_id}, body=body, **kwargs)


def enumerate_request(
    query: str | None, *, uri: str | None = None, optimize: bool = True, max_elements: int | None = None
) -> bytes:
    enumerate_body: dict[str, Any] = {}
    if optimize:
        enumerate_body["w:OptimizeEnumeration"] = None
    if max_elements is not None:
        enumerate_body["w:MaxElements"] = str(max_elements)
    if query is not None:
        enumerate_body["w:Filter"] = {"@Dialect": WQL, "#text": query}
    return envelope(ACTION_ENUMERATE, uri or class_uri("*"), body={"n:Enumerate": enumerate_body})


def pull_request(context: str, max_elements: int | None = None) -> bytes:
    pull: dict[str, Any] = {"n:EnumerationContext": context}
    if max_elements is not None:
        pull["n:MaxElements"] = str(max_elements)
    return envelope(ACTION_PULL, class_uri("*"), body={"n:Pull": pull})


# --------------------------------------------------------------------------- reply readers


def message_id_of(request: bytes) -> str:
    return str(ET.fromstring(request).findtext("s:Header/a:MessageID", namespaces=NS))


def header(reply: bytes, name: str) -> str | None:
    return ET.fromstring(reply).findtext(f"s:Header/{name}", namespaces=NS)


def body_element(reply: bytes) -> ET.Element:
    body = ET.fromstring(reply).find("s:Body", NS)
    assert body is not None and len(body) == 1
    return body[0]


def instance_values(element: ET.Element) -> dict[str, str | None]:
    """Property name -> text (None for xsi:nil, the cim:Datetime text for datetimes)."""
    values: dict[str, str | None] = {}
    for child in element:
        name = child.tag.rsplit("}", 1)[1]
        if child.get(XSI_NIL) == "true":
            values[name] = None
        elif len(child):
            values[name] = child[0].text
        else:
            values[name] = child.text
    return values


def pywinrm_error(body: bytes) -> Exception:
    """What pywinrm raises for this fault body, via its own Protocol.send_message parsing."""

    class FaultTransport:
        def send_message(self, message: str) -> bytes:
            raise WinRMTransportError("http", 500, body.decode())

    protocol = Protocol("http://windows-host:5985/wsman", transport="basic", username="u", password="p")
    protocol.transport = cast(Transport, FaultTransport())
    with pytest.raises((WSManFaultError, WinRMOperationTimeoutError)) as caught:
        protocol.send_message("<unused/>")
    return caught.value


def wsman_fault(body: bytes) -> WSManFaultError:
    error = pywinrm_error(body)
    assert isinstance(error, WSManFaultError)
    return error


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(mono_s=500.0)


def make_provider(clock: FakeClock, **overrides: Any) -> Provider:
    settings = EmulatorSettings(package_count=60, **overrides)
    return Provider(settings, clock=clock.monotonic, wall_clock=clock.wall)


@pytest.fixture
def provider(clock: FakeClock) -> Provider:
    return make_provider(clock)


def pick(provider: Provider, *, flag: int = STORAGE_DIRECT, ready: bool | None = None) -> tuple[str, str]:
    """(PackageID, class) of the first package with that source flag / medium state."""
    for summary in provider.packages():
        if summary["PkgSourceFlag"] == flag and (ready is None or summary["medium_ready"] is ready):
            return str(summary["PackageID"]), str(summary["class"])
    raise AssertionError("no such package in the catalogue")


def enumerate_all(provider: Provider, query: str, *, page: int) -> Iterator[ET.Element]:
    """Every item of an optimized enumeration, pulling until EndOfSequence (bounded)."""
    reply = provider.handle(enumerate_request(query, max_elements=page), user=USER)
    assert reply.status == 200
    response = body_element(reply.body)
    yield from response.findall("w:Items/*", NS)
    context = response.findtext("n:EnumerationContext", namespaces=NS)
    ended = response.find("w:EndOfSequence", NS) is not None
    for _ in range(1_000):
        if ended:
            return
        assert context
        pulled = provider.handle(pull_request(context, max_elements=page), user=USER)
        assert pulled.status == 200
        pull_response = body_element(pulled.body)
        yield from pull_response.findall("n:Items/*", NS)
        ended = pull_response.find("n:EndOfSequence", NS) is not None
        context = pull_response.findtext("n:EnumerationContext", namespaces=NS)
    raise AssertionError("enumeration did not end")


# --------------------------------------------------------------------------- Get


def test_get_returns_the_instance_with_windows_headers(provider: Provider) -> None:
    """Get answers GetResponse, RelatesTo the MessageID, anonymous To, a fresh uuid MessageID."""
    package_id, class_name = pick(provider)
    request = get_request(class_name, package_id)
    reply = provider.handle(request, user=USER)
    assert reply.status == 200
    assert header(reply.body, "a:Action") == "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse"
    assert header(reply.body, "a:RelatesTo") == message_id_of(request)
    assert header(reply.body, "a:To") == ANONYMOUS
    assert str(header(reply.body, "a:MessageID")).startswith("uuid:")
    instance = body_element(reply.body)
    assert instance.tag == f"{{{class_uri(class_name)}}}{class_name}"
    assert instance.get(f"{{{NS['xsi']}}}type") == f"p:{class_name}_Type"
    values = instance_values(instance)
    assert values["PackageID"] == package_id
    assert {"Name", "PackageType", "PkgSourceFlag", "PkgSourcePath", "SourceVersion", "SourceDate"} <= set(values)
    assert {"LastRefreshTime", "StoredPkgVersion", "StoredPkgPath", "ActionInProgress", "Description"} <= set(values)
    assert {"Manufacturer", "Version", "SourceSite"} <= set(values)


def test_get_renders_datetimes_as_cim_datetime_and_nulls_as_xsi_nil(provider: Provider) -> None:
    """SourceDate is `<p:SourceDate><cim:Datetime>...Z</cim:Datetime>`; nulls carry xsi:nil."""
    package_id, class_name = pick(provider)  # DIRECT packages have no stored copy: StoredPkgPath is null
    instance = body_element(provider.handle(get_request(class_name, package_id), user=USER).body)
    source_date = instance.find(f"{{{class_uri(class_name)}}}SourceDate/cim:Datetime", NS)
    assert source_date is not None and str(source_date.text).endswith("Z")
    stored_path = instance.find(f"{{{class_uri(class_name)}}}StoredPkgPath")
    assert stored_path is not None and stored_path.get(XSI_NIL) == "true"


def test_resource_uri_namespace_site_and_class_match_without_case(provider: Provider) -> None:
    """`root/SMS/SITE_ps1` and `sms_driverpackage` name the same namespace and class."""
    package_id, class_name = pick(provider)
    uri = f"http://schemas.microsoft.com/wbem/wsman/1/wmi/ROOT/SMS/site_ps1/{class_name.lower()}"
    reply = provider.handle(envelope(ACTION_GET, uri, selectors={"packageid": package_id.lower()}), user=USER)
    assert reply.status == 200
    assert instance_values(body_element(reply.body))["PackageID"] == package_id


def test_get_through_another_class_is_not_found(provider: Provider) -> None:
    """A package is an instance of one class only; Get through another is DestinationUnreachable."""
    package_id, class_name = pick(provider)
    other = "SMS_Package" if class_name != "SMS_Package" else "SMS_DriverPackage"
    reply = provider.handle(get_request(other, package_id), user=USER)
    error = wsman_fault(reply.body)
    assert reply.status == 500
    assert (error.fault_code, error.fault_subcode) == ("s:Sender", "a:DestinationUnreachable")
    assert error.wsman_fault_code == 2150858752
    assert "2147749890" in error.response  # WBEM_E_NOT_FOUND in the __ExtendedStatus


def test_get_of_a_missing_package_is_not_found_and_relates_to_the_request(provider: Provider) -> None:
    """A missing PackageID answers the not-found fault with RelatesTo the request."""
    request = get_request("SMS_Package", "PS1FFFFF")
    reply = provider.handle(request, user=USER)
    assert wsman_fault(reply.body).wsman_fault_code == 2150858752
    assert header(reply.body, "a:RelatesTo") == message_id_of(request)


@pytest.mark.parametrize(
    "uri",
    [
        class_uri("SMS_Nope"),
        class_uri("SMS_Package", site="XYZ"),
        "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/cimv2/SMS_Package",
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
    ],
)
def test_get_on_an_unknown_class_or_namespace_is_destination_unreachable(provider: Provider, uri: str) -> None:
    """Unknown classes, sites and namespaces answer DestinationUnreachable."""
    reply = provider.handle(envelope(ACTION_GET, uri, selectors={"PackageID": "PS100001"}), user=USER)
    assert wsman_fault(reply.body).fault_subcode == "a:DestinationUnreachable"


@pytest.mark.parametrize(
    ("selectors", "code"),
    [
        ({"Name": "x"}, 2150858843),
        ({"PackageID": "PS100001", "Name": "x"}, 2150858843),
        ({}, 2150858842),
    ],
)
def test_selectors_other_than_package_id_are_invalid(provider: Provider, selectors: dict[str, str], code: int) -> None:
    """Only the key PackageID selects a package: others are unexpected, none is insufficient."""
    reply = provider.handle(envelope(ACTION_GET, class_uri("SMS_Package"), selectors=selectors), user=USER)
    error = wsman_fault(reply.body)
    assert (error.fault_subcode, error.wsman_fault_code) == ("w:InvalidSelectors", code)


def test_selector_values_are_escaped_when_echoed(provider: Provider) -> None:
    """A hostile selector value comes back escaped inside a well-formed fault."""
    reply = provider.handle(get_request("SMS_Package", 'PS1"<&>]]>'), user=USER)
    error = wsman_fault(reply.body)
    assert error.wsman_fault_code == 2150858752
    assert "&lt;&amp;&gt;" in error.response


# --------------------------------------------------------------------------- Invoke


def test_refresh_returns_zero_and_bumps_the_source_version(provider: Provider) -> None:
    """RefreshPkgSource answers `<Uri>/RefreshPkgSourceResponse` with ReturnValue 0."""
    package_id, class_name = pick(provider)
    version = provider.package(package_id)["SourceVersion"]  # type: ignore[index]
    request = invoke_request(class_name, package_id)
    reply = provider.handle(request, user=USER)
    assert reply.status == 200
    assert header(reply.body, "a:Action") == f"{class_uri(class_name)}/RefreshPkgSourceResponse"
    assert header(reply.body, "a:RelatesTo") == message_id_of(request)
    output = body_element(reply.body)
    assert output.tag == f"{{{class_uri(class_name)}}}RefreshPkgSource_OUTPUT"
    assert output.findtext(f"{{{class_uri(class_name)}}}ReturnValue") == "0"
    get = instance_values(body_element(provider.handle(get_request(class_name, package_id), user=USER).body))
    assert get["SourceVersion"] == str(version + 1)


def test_an_unknown_method_is_an_invalid_method_fault(provider: Provider) -> None:
    """Any method but RefreshPkgSource fails like WMI's WBEM_E_INVALID_METHOD."""
    package_id, class_name = pick(provider)
    error = wsman_fault(provider.handle(invoke_request(class_name, package_id, method="Frobnicate"), user=USER).body)
    assert error.wsman_fault_code == 0x8004102E
    assert error.fault_subcode == "w:InternalError"


def test_medium_not_ready_returns_error_not_ready(provider: Provider) -> None:
    """return_value mode: a STORAGE_COMPRESS package with no medium returns 21."""
    package_id, class_name = pick(provider, flag=STORAGE_COMPRESS, ready=False)
    reply = provider.handle(invoke_request(class_name, package_id), user=USER)
    assert body_element(reply.body).findtext(f"{{{class_uri(class_name)}}}ReturnValue") == "21"


def test_medium_not_ready_in_fault_mode_is_a_generic_failure_with_sms_extended_status(clock: FakeClock) -> None:
    """fault mode: WBEM_E_FAILED with an SMS_ExtendedStatus that describes the medium."""
    provider = make_provider(clock, medium_failure_mode="fault")
    package_id, class_name = pick(provider, flag=STORAGE_COMPRESS, ready=False)
    error = wsman_fault(provider.handle(invoke_request(class_name, package_id), user=USER).body)
    assert (error.fault_code, error.fault_subcode) == ("s:Receiver", "w:InternalError")
    assert error.wmierror_code == 0x80041001
    assert "SMS_ExtendedStatus" in error.response and "medium" in error.response


def test_medium_made_ready_through_control_lets_refresh_succeed(provider: Provider) -> None:
    """set_medium_ready turns the next refresh into ReturnValue 0."""
    package_id, class_name = pick(provider, flag=STORAGE_COMPRESS, ready=False)
    assert provider.set_medium_ready(package_id) == [package_id]
    reply = provider.handle(invoke_request(class_name, package_id), user=USER)
    assert body_element(reply.body).findtext(f"{{{class_uri(class_name)}}}ReturnValue") == "0"


def test_no_source_package_returns_a_non_zero_value(provider: Provider) -> None:
    """STORAGE_NO_SOURCE has nothing to refresh: ReturnValue 50."""
    package_id, class_name = pick(provider, flag=STORAGE_NO_SOURCE)
    reply = provider.handle(invoke_request(class_name, package_id), user=USER)
    assert body_element(reply.body).findtext(f"{{{class_uri(class_name)}}}ReturnValue") == "50"


def test_refresh_with_a_foreign_body_is_a_schema_fault(provider: Provider) -> None:
    """The body of the custom action must be RefreshPkgSource_INPUT."""
    package_id, class_name = pick(provider)
    uri = class_uri(class_name)
    request = envelope(f"{uri}/RefreshPkgSource", uri, selectors={"PackageID": package_id}, body={"p:Other": None})
    assert wsman_fault(provider.handle(request, user=USER).body).wsman_fault_code == 2150858817


# --------------------------------------------------------------------------- Enumerate / Pull


def test_wql_enumeration_pages_through_every_match_once(provider: Provider) -> None:
    """Optimized Enumerate carries the first page; Pulls follow until EndOfSequence."""
    expected = {s["PackageID"] for s in provider.packages() if s["class"] == "SMS_DriverPackage"}
    items = list(enumerate_all(provider, "SELECT * FROM SMS_DriverPackage", page=2))
    ids = [instance_values(item)["PackageID"] for item in items]
    assert len(ids) == len(expected) > 2
    assert set(ids) == expected


def test_wql_where_and_projection_return_only_matching_selected_properties(provider: Provider) -> None:
    """WHERE filters; a property list limits each item to those properties."""
    query = "SELECT PackageID, PkgSourceFlag FROM SMS_PackageBaseclass WHERE PkgSourceFlag = 3 AND Name LIKE '%'"
    items = list(enumerate_all(provider, query, page=50))
    expected = {s["PackageID"] for s in provider.packages() if s["PkgSourceFlag"] == STORAGE_COMPRESS}
    assert {instance_values(item)["PackageID"] for item in items} == expected
    assert all(set(instance_values(item)) == {"PackageID", "PkgSourceFlag"} for item in items)
    assert {item.tag.rsplit("}", 1)[1] for item in items} <= {s["class"] for s in provider.packages()}


def test_enumerating_a_class_uri_without_filter_returns_its_instances(provider: Provider) -> None:
    """Enumerate on a class resource URI without a filter lists every instance of the class."""
    reply = provider.handle(enumerate_request(None, uri=class_uri("SMS_Package"), max_elements=500), user=USER)
    response = body_element(reply.body)
    expected = {s["PackageID"] for s in provider.packages() if s["class"] == "SMS_Package"}
    assert {instance_values(i)["PackageID"] for i in response.findall("w:Items/*", NS)} == expected
    assert response.find("w:EndOfSequence", NS) is not None


def test_unoptimized_enumeration_returns_a_context_then_pulls(provider: Provider) -> None:
    """Without OptimizeEnumeration the reply is a context only; Pull returns the items."""
    reply = provider.handle(enumerate_request("SELECT * FROM SMS_Package", optimize=False), user=USER)
    response = body_element(reply.body)
    assert response.find("w:Items", NS) is None
    context = str(response.findtext("n:EnumerationContext", namespaces=NS))
    pulled = body_element(provider.handle(pull_request(context, max_elements=1000), user=USER).body)
    assert pulled.find("n:EndOfSequence", NS) is not None
    assert pulled.find("n:EnumerationContext", NS) is None
    assert len(pulled.findall("n:Items/*", NS)) == sum(s["class"] == "SMS_Package" for s in provider.packages())


@pytest.mark.parametrize("context", ["uuid:00000000-0000-0000-0000-000000000000", ""])
def test_pull_with_an_unknown_context_is_invalid_enumeration_context(provider: Provider, context: str) -> None:
    """An unknown context answers n:InvalidEnumerationContext."""
    error = wsman_fault(provider.handle(pull_request(context), user=USER).body)
    assert error.fault_subcode == "n:InvalidEnumerationContext"


def test_a_finished_or_released_context_cannot_be_pulled_again(provider: Provider) -> None:
    """After EndOfSequence or Release the context is gone."""
    reply = provider.handle(enumerate_request("SELECT * FROM SMS_Package", max_elements=1), user=USER)
    context = str(body_element(reply.body).findtext("n:EnumerationContext", namespaces=NS))
    release = envelope(ACTION_RELEASE, class_uri("*"), body={"n:Release": {"n:EnumerationContext": context}})
    assert provider.handle(release, user=USER).status == 200
    assert wsman_fault(provider.handle(pull_request(context), user=USER).body).fault_subcode == (
        "n:InvalidEnumerationContext"
    )


def test_an_idle_context_expires(provider: Provider, clock: FakeClock) -> None:
    """A context not pulled for ENUMERATION_CONTEXT_TTL_S is dropped."""
    reply = provider.handle(enumerate_request("SELECT * FROM SMS_Package", optimize=False), user=USER)
    context = str(body_element(reply.body).findtext("n:EnumerationContext", namespaces=NS))
    clock.mono_s += ENUMERATION_CONTEXT_TTL_S + 1
    assert wsman_fault(provider.handle(pull_request(context), user=USER).body).fault_subcode == (
        "n:InvalidEnumerationContext"
    )


@pytest.mark.parametrize(
    ("query", "wmi_code"),
    [
        ("SELECT * FROM SMS_Package WHERE", 0x80041017),
        ("SELECT Bogus FROM SMS_Package", 0x80041017),
        ("SELECT * FROM SMS_Package WHERE Bogus = 1", 0x80041017),
        ("SELECT * FROM SMS_NoSuchClass", 0x80041010),
    ],
)
def test_bad_wql_is_cannot_process_filter_with_the_wmi_code(provider: Provider, query: str, wmi_code: int) -> None:
    """Syntax errors and unknown properties are WBEM_E_INVALID_QUERY, unknown classes INVALID_CLASS."""
    error = wsman_fault(provider.handle(enumerate_request(query), user=USER).body)
    assert (error.fault_subcode, error.wsman_fault_code) == ("n:CannotProcessFilter", 2150858778)
    status = ET.fromstring(error.response).find(".//{*}ExtendedError/*/{*}StatusCode")
    assert status is not None and status.text == str(wmi_code)


def test_enumerating_star_needs_a_filter(provider: Provider) -> None:
    """The `*` resource URI cannot be enumerated without a WQL filter."""
    error = wsman_fault(provider.handle(enumerate_request(None), user=USER).body)
    assert error.fault_subcode == "n:CannotProcessFilter"


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize("user", ["LAB\\sccm-svc", "lab\\SCCM-SVC", "sccm-svc", "sccm-svc@lab.local"])
def test_the_configured_account_is_recognised_in_any_spelling(provider: Provider, user: str) -> None:
    """The configured user matches without case, with or without a domain."""
    package_id, class_name = pick(provider)
    assert provider.handle(get_request(class_name, package_id), user=user).status == 200


@pytest.mark.parametrize("user", ["LAB\\someone", "OTHER\\sccm-svc", "guest"])
def test_other_accounts_get_wmi_access_denied(provider: Provider, user: str) -> None:
    """An authenticated account without rights on the namespace gets w:AccessDenied."""
    package_id, class_name = pick(provider)
    for request in (get_request(class_name, package_id), invoke_request(class_name, package_id)):
        error = wsman_fault(provider.handle(request, user=user).body)
        assert (error.fault_subcode, error.wsman_fault_code) == ("w:AccessDenied", 2150859012)


def test_denied_package_answers_rbac_access_denied_and_vanishes_from_queries(provider: Provider) -> None:
    """deny_access: Get and Invoke are denied (SMS_ExtendedStatus); queries omit it; allow restores."""
    package_id, class_name = pick(provider)
    provider.deny_access(package_id)
    for request in (get_request(class_name, package_id), invoke_request(class_name, package_id)):
        error = wsman_fault(provider.handle(request, user=USER).body)
        assert (error.fault_subcode, error.wsman_fault_code) == ("w:AccessDenied", 2150859013)
        assert "SMS_ExtendedStatus" in error.response
    listed = {
        instance_values(i)["PackageID"] for i in enumerate_all(provider, "SELECT * FROM SMS_PackageBaseclass", page=100)
    }
    assert package_id not in listed
    provider.allow_access(package_id)
    assert provider.handle(get_request(class_name, package_id), user=USER).status == 200


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        b"<unclosed",
        b"<root/>",
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"/>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
    ],
)
def test_malformed_envelopes_answer_a_schema_validation_fault(provider: Provider, data: bytes) -> None:
    """Anything that is not a SOAP 1.2 envelope answers w:SchemaValidationError (HTTP 500)."""
    reply = provider.handle(data, user=USER)
    assert reply.status == 500
    error = wsman_fault(reply.body)
    assert (error.fault_subcode, error.wsman_fault_code) == ("w:SchemaValidationError", 2150858817)


def test_a_missing_message_id_is_a_fault_without_relates_to(provider: Provider) -> None:
    """No wsa:MessageID: a:MessageInformationHeaderRequired, and nothing to relate to."""
    request = ET.fromstring(get_request("SMS_Package", "PS100001"))
    header_element = request.find("s:Header", NS)
    message_id = request.find("s:Header/a:MessageID", NS)
    assert header_element is not None and message_id is not None
    header_element.remove(message_id)
    reply = provider.handle(ET.tostring(request), user=USER)
    assert wsman_fault(reply.body).fault_subcode == "a:MessageInformationHeaderRequired"
    assert header(reply.body, "a:RelatesTo") is None


def test_an_unknown_action_is_action_not_supported(provider: Provider) -> None:
    """An action the provider does not implement answers a:ActionNotSupported."""
    request = envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", class_uri("SMS_Package"))
    assert wsman_fault(provider.handle(request, user=USER).body).fault_subcode == "a:ActionNotSupported"


_FUZZ_PROVIDER = Provider(EmulatorSettings(package_count=20))
_VALID_GET = get_request("SMS_Package", "PS100001")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_answer_a_well_formed_fault(data: bytes) -> None:
    """Any bytes at all: never an exception, always HTTP 500 with a parseable SOAP fault."""
    reply = _FUZZ_PROVIDER.handle(data, user=USER)
    assert reply.status == 500
    assert ET.fromstring(reply.body).find("s:Body/s:Fault", NS) is not None


@settings(max_examples=150)
@given(st.integers(min_value=0, max_value=len(_VALID_GET) - 1), st.binary(min_size=1, max_size=8))
def test_corrupted_requests_never_raise(position: int, junk: bytes) -> None:
    """A valid request with bytes overwritten answers 200 or a fault, never an exception."""
    data = _VALID_GET[:position] + junk + _VALID_GET[position + len(junk) :]
    reply = _FUZZ_PROVIDER.handle(data, user=USER)
    assert reply.status in (200, 500)
    ET.fromstring(reply.body)


@settings(max_examples=100)
@given(st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40))
def test_any_selector_value_gets_a_well_formed_reply(value: str) -> None:
    """Selector values are echoed escaped: the reply always parses."""
    reply = _FUZZ_PROVIDER.handle(get_request("SMS_Package", value), user=USER)
    assert reply.status in (200, 500)
    ET.fromstring(reply.body)


# --------------------------------------------------------------------------- injected faults, log


def test_injected_timeout_is_what_pywinrm_turns_into_an_operation_timeout(provider: Provider) -> None:
    """fault_reply("timeout_fault") is w:TimedOut 2150858793: pywinrm raises WinRMOperationTimeoutError."""
    request = get_request("SMS_Package", "PS100001")
    reply = provider.fault_reply("timeout_fault", request)
    assert reply.status == 500
    assert isinstance(pywinrm_error(reply.body), WinRMOperationTimeoutError)
    assert header(reply.body, "a:RelatesTo") == message_id_of(request)


def test_injected_quota_fault_carries_the_operations_quota_code(provider: Provider) -> None:
    """fault_reply("quota_fault") is w:QuotaLimit with MSFT_WmiError error_Code 0x803381A6."""
    error = wsman_fault(provider.fault_reply("quota_fault", get_request("SMS_Package", "PS100001")).body)
    assert (error.fault_subcode, error.wmierror_code) == ("w:QuotaLimit", 0x803381A6)
    assert "25 concurrent operations" in error.response


def test_injected_generic_failure_is_wbem_e_failed(provider: Provider) -> None:
    """fault_reply("generic_failure") is WBEM_E_FAILED with an SMS_ExtendedStatus."""
    package_id, class_name = pick(provider)
    request = invoke_request(class_name, package_id)
    reply = provider.fault_reply("generic_failure", request)
    error = wsman_fault(reply.body)
    assert (error.fault_subcode, error.wmierror_code) == ("w:InternalError", 0x80041001)
    assert header(reply.body, "a:RelatesTo") == message_id_of(request)
    assert provider.call_log()["packages"][package_id]["events"][-1]["result"] == "injected:generic_failure"


def test_injected_fault_for_unparseable_request_has_no_relates_to(provider: Provider) -> None:
    """A fault for a request without a readable MessageID simply omits RelatesTo."""
    reply = provider.fault_reply("timeout_fault", b"garbage")
    assert header(reply.body, "a:RelatesTo") is None


def test_call_log_counts_operations_per_package_and_in_total(provider: Provider) -> None:
    """call_log records gets, invokes, accepted/rejected and events; reset_log clears it."""
    package_id, class_name = pick(provider)
    not_ready, not_ready_class = pick(provider, flag=STORAGE_COMPRESS, ready=False)
    provider.handle(get_request(class_name, package_id), user=USER)
    provider.handle(invoke_request(class_name, package_id), user=USER)
    provider.handle(invoke_request(not_ready_class, not_ready), user=USER)
    provider.handle(b"junk", user=USER)
    log = provider.call_log()
    entry = log["packages"][package_id]
    assert (entry["gets"], entry["invokes"], entry["accepted"], entry["rejected"]) == (1, 1, 1, 0)
    assert [e["op"] for e in entry["events"]] == ["get", "invoke"]
    assert entry["events"][1]["user"] == USER and entry["events"][1]["result"] == "accepted"
    assert log["packages"][not_ready]["rejected"] == 1
    assert log["totals"] == {
        "requests": 4, "gets": 1, "invokes": 2, "accepted": 1, "rejected": 1,
        "enumerates": 0, "pulls": 0, "faults": 1,
    }  # fmt: skip
    provider.reset_log()
    assert provider.call_log() == {"packages": {}, "totals": dict.fromkeys(log["totals"], 0)}


def test_concurrent_refreshes_are_all_counted(provider: Provider) -> None:
    """handle() is safe from many threads: every accepted refresh bumps the version once."""
    package_id, class_name = pick(provider)
    version = provider.package(package_id)["SourceVersion"]  # type: ignore[index]
    request = invoke_request(class_name, package_id)

    def refresh_many() -> None:
        for _ in range(50):
            assert provider.handle(request, user=USER).status == 200

    threads = [threading.Thread(target=refresh_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert provider.package(package_id)["SourceVersion"] == version + 200  # type: ignore[index]
    assert provider.call_log()["packages"][package_id]["accepted"] == 200


# --------------------------------------------------------------------------- enumeration contexts: memory


def _open_context(provider: Provider, query: str) -> str:
    """An unoptimized Enumerate: a context holding every match, nothing returned yet."""
    reply = provider.handle(enumerate_request(query, optimize=False), user=USER)
    return str(body_element(reply.body).findtext("n:EnumerationContext", namespaces=NS))


def _pulled_ids(provider: Provider, context: str) -> list[str | None] | str:
    """PackageIDs of one Pull of up to 1000 items, or the fault subcode."""
    reply = provider.handle(pull_request(context, max_elements=1000), user=USER)
    if reply.status != 200:
        return str(wsman_fault(reply.body).fault_subcode)
    return [instance_values(item)["PackageID"] for item in body_element(reply.body).findall("n:Items/*", NS)]


def test_a_context_renders_each_package_as_it_is_when_pulled(provider: Provider) -> None:
    """Contexts keep PackageIDs, not instance copies: a refresh between Enumerate and Pull shows up."""
    package_id, class_name = pick(provider)
    query = f"SELECT PackageID, SourceVersion FROM SMS_PackageBaseclass WHERE PackageID = '{package_id}'"  # noqa: S608 - WQL for the emulator, not SQL
    context = _open_context(provider, query)
    before = provider.package(package_id)
    assert before is not None
    assert provider.handle(invoke_request(class_name, package_id), user=USER).status == 200
    reply = provider.handle(pull_request(context, max_elements=10), user=USER)
    (item,) = body_element(reply.body).findall("n:Items/*", NS)
    assert instance_values(item)["SourceVersion"] == str(before["SourceVersion"] + 1)


def test_expired_contexts_are_pruned_when_a_new_one_is_stored(provider: Provider, clock: FakeClock) -> None:
    """Abandoned contexts past their TTL stop holding memory as soon as another enumeration is stored."""
    for _ in range(3):
        _open_context(provider, "SELECT * FROM SMS_PackageBaseclass")
    assert provider.open_enumerations() == {"contexts": 3, "package_ids": 3 * len(provider.packages())}
    clock.mono_s += ENUMERATION_CONTEXT_TTL_S + 1
    _open_context(provider, "SELECT * FROM SMS_Package")
    expected = sum(s["class"] == "SMS_Package" for s in provider.packages())
    assert provider.open_enumerations() == {"contexts": 1, "package_ids": expected}


def test_contexts_past_the_item_cap_evict_the_oldest(clock: FakeClock) -> None:
    """Over max_enumeration_items the oldest contexts go (InvalidEnumerationContext); the newest always fits."""
    provider = Provider(
        EmulatorSettings(package_count=60), clock=clock.monotonic, wall_clock=clock.wall, max_enumeration_items=130
    )
    query = "SELECT * FROM SMS_PackageBaseclass"
    first, second, third = (_open_context(provider, query) for _ in range(3))
    assert provider.open_enumerations() == {"contexts": 2, "package_ids": 120}
    assert _pulled_ids(provider, first) == "n:InvalidEnumerationContext"
    assert len(_pulled_ids(provider, second)) == len(_pulled_ids(provider, third)) == 60
    assert provider.open_enumerations() == {"contexts": 0, "package_ids": 0}


def test_denied_users_cannot_include_the_configured_account() -> None:
    """A denied user the provider would take for the configured account is a configuration error."""
    with pytest.raises(ValueError, match="denied_users"):
        Provider(EmulatorSettings(username="LAB\\svc", denied_users=("svc",)))
