"""Unit tests of WS-Man reply parsing (worker.wsman.replies) on real captures and documented shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from errors import NotFoundError, ProtocolError
from testing.classified import raises_classified
from worker.domain.packages import STORAGE_COMPRESS, PackageInfo
from worker.provider.classify import error_from_wsman
from worker.wsman import (
    FaultReply,
    MalformedReply,
    ReplyHeader,
    WmiInstance,
    check_action,
    check_relates_to,
    parse_enumeration,
    parse_header,
    parse_instance,
    parse_method_output,
)
from worker.wsman.namespaces import ACTION_ENUMERATE_RESPONSE, NS_ENUMERATION, NS_SOAP, NS_WSMAN

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"
CLASS_URI = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_DriverPackage"
REQUEST_ID = "uuid:5D1B6E5A-9D1E-4C55-A7AE-BB35A0A4E0C1"


def _capture(name: str) -> bytes:
    return (CAPTURES / name).read_bytes()


# No public capture of the SMS Provider exists: these follow the documented class shapes and the
# WMI plug-in's rendering seen in the Win32_Process captures, with deliberately unusual
# prefixes, xml:lang / xsi:type attributes and pretty-printing whitespace.
GET_RESPONSE = f"""<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xml:lang="en-US" xmlns:env="{NS_SOAP}"
    xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">
  <env:Header>
    <wsa:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse</wsa:Action>
    <wsa:MessageID>uuid:0A6A2B8E-8E0B-4D0E-9E43-3C8C9F6D2E11</wsa:MessageID>
    <wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>
    <wsa:RelatesTo>{REQUEST_ID.lower()}</wsa:RelatesTo>
  </env:Header>
  <env:Body>
    <drv:SMS_DriverPackage xmlns:drv="{CLASS_URI}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xsi:type="drv:SMS_DriverPackage_Type">
      <drv:ActionInProgress xsi:type="cim:cimUnsignedInt"> 1 </drv:ActionInProgress>
      <drv:Description xsi:nil="true"/>
      <drv:ISVData xsi:nil="true"/>
      <drv:LastRefreshTime>
        <cim:Datetime>2024-03-01T10:15:00Z</cim:Datetime>
      </drv:LastRefreshTime>
      <drv:Name xml:lang="en-US">HP EliteBook 840 G9 &amp; Dock &lt;x64&gt;</drv:Name>
      <drv:PackageID>PS100012</drv:PackageID>
      <drv:PackageType>3</drv:PackageType>
      <drv:PkgSourceFlag>3</drv:PkgSourceFlag>
      <drv:PkgSourcePath>\\\\fs01\\drivers\\hp\\840g9</drv:PkgSourcePath>
      <drv:RefreshSchedule xsi:nil="true"/>
      <drv:SecuredScopeNames>Default</drv:SecuredScopeNames>
      <drv:SecuredScopeNames>Drivers</drv:SecuredScopeNames>
      <drv:SourceDate><cim:Datetime>2024-02-28T08:00:00Z</cim:Datetime></drv:SourceDate>
      <drv:SourceVersion>7</drv:SourceVersion>
      <cim:Location>{CLASS_URI}?PackageID=PS100012</cim:Location>
    </drv:SMS_DriverPackage>
  </env:Body>
</env:Envelope>"""

REFRESH_OUTPUT = f"""<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing">
  <s:Header>
    <a:Action>{CLASS_URI}/RefreshPkgSourceResponse</a:Action>
    <a:MessageID>uuid:7F0C7A44-2D2B-4C3B-8E0A-8F8D3C2B1A00</a:MessageID>
    <a:RelatesTo>{REQUEST_ID}</a:RelatesTo>
  </s:Header>
  <s:Body>
    <q:RefreshPkgSource_OUTPUT xmlns:q="{CLASS_URI}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
      <q:ReturnValue xsi:type="cim:cimSignedInt" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common">
        {{return_value}}
      </q:ReturnValue>
    </q:RefreshPkgSource_OUTPUT>
  </s:Body>
</s:Envelope>"""


# --- header and RelatesTo -------------------------------------------------------------


def test_header_fields_are_read_from_a_real_capture() -> None:
    """parse_header returns Action, MessageID and RelatesTo of a Windows EnumerateResponse."""
    header = parse_header(_capture("winrb_enumerate_response.xml"))

    assert header == ReplyHeader(
        action=ACTION_ENUMERATE_RESPONSE,
        message_id="uuid:28C4B795-2C5F-472D-929A-A911586DC18B",
        relates_to="uuid:7B8C31C7-122A-4F6C-98CA-3327B4D39CD4",
    )
    check_action(header, ACTION_ENUMERATE_RESPONSE)


def test_relates_to_matches_our_message_id_case_insensitively() -> None:
    """A reply relating to our MessageID passes, whatever the UUID's letter case."""
    check_relates_to(parse_header(GET_RESPONSE), REQUEST_ID)


def test_relates_to_of_another_request_is_a_protocol_error() -> None:
    """A reply to some other request is malformed (a ProtocolError) naming both IDs."""
    header = parse_header(_capture("winrb_enumerate_response.xml"))

    with raises_classified(ProtocolError, match="does not match"):
        check_relates_to(header, REQUEST_ID)


def test_missing_relates_to_is_a_protocol_error() -> None:
    """A reply without RelatesTo cannot be trusted."""
    header = parse_header(_capture("winrb_quota_shells.xml"))

    assert header.relates_to is None
    with raises_classified(ProtocolError, match="no RelatesTo"):
        check_relates_to(header, REQUEST_ID)


def test_unexpected_action_is_a_protocol_error() -> None:
    """check_action refuses a reply carrying another Action."""
    with raises_classified(ProtocolError, match="Action"):
        check_action(parse_header(GET_RESPONSE), ACTION_ENUMERATE_RESPONSE)


# --- Get -----------------------------------------------------------------------------


def test_get_response_parses_into_a_typed_package() -> None:
    """A GetResponse instance yields typed package fields; nil, datetime and cim:Location handled."""
    instance = parse_instance(GET_RESPONSE)
    package = PackageInfo.from_instance(instance)

    assert instance.class_name == "SMS_DriverPackage"
    assert instance.get("Description") is None
    assert "Location" not in instance.properties
    assert package == PackageInfo(
        class_name="SMS_DriverPackage",
        package_id="PS100012",
        name="HP EliteBook 840 G9 & Dock <x64>",
        package_type=3,
        pkg_source_flag=STORAGE_COMPRESS,
        pkg_source_path="\\\\fs01\\drivers\\hp\\840g9",
        source_version=7,
        source_date="2024-02-28T08:00:00Z",
        last_refresh_time="2024-03-01T10:15:00Z",
        action_in_progress=1,
    )
    assert package.is_storage_compress
    assert package.as_dict()["package_id"] == "PS100012"


def test_repeated_elements_are_array_properties() -> None:
    """A property element repeated in the instance is returned as a list."""
    instance = parse_instance(GET_RESPONSE)

    assert instance.get("SecuredScopeNames") == ["Default", "Drivers"]
    assert instance.get_list("SecuredScopeNames") == ["Default", "Drivers"]
    assert instance.get_list("PackageID") == ["PS100012"]
    assert instance.get_list("RefreshSchedule") == []


def test_absent_package_properties_are_none() -> None:
    """Properties the reply does not carry come out as None."""
    package = PackageInfo.from_instance(WmiInstance("SMS_Package", {"PackageID": "PS100001"}))

    assert package.name is None and package.source_version is None and package.pkg_source_flag is None


@pytest.mark.parametrize(
    ("properties", "match"),
    [
        ({"Name": "x"}, "no PackageID"),
        ({"PackageID": None}, "no PackageID"),
        ({"PackageID": "PS100001", "SourceVersion": "seven"}, "not an integer"),
        ({"PackageID": "PS100001", "PkgSourceFlag": ["2", "3"]}, "is an array"),
    ],
)
def test_untrustworthy_package_properties_are_protocol_errors(
    properties: dict[str, str | list[str | None] | None], match: str
) -> None:
    """A package without an id, with a non-numeric number or an unexpected array is refused."""
    with pytest.raises(ProtocolError, match=match):
        PackageInfo.from_instance(WmiInstance("SMS_Package", properties))


def test_a_fault_inside_a_200_reply_raises_the_error_it_means() -> None:
    """parse_instance on a Fault body raises FaultReply, which classifies as the error the fault means."""
    with raises_classified(NotFoundError):
        parse_instance(_capture("omi_wmi_not_found.xml"))


# --- Invoke ---------------------------------------------------------------------------


@pytest.mark.parametrize("return_value", [0, 1, 2147749889])
def test_refresh_output_yields_the_return_value(return_value: int) -> None:
    """RefreshPkgSource_OUTPUT gives its ReturnValue as an int (whitespace and prefixes aside)."""
    output = parse_method_output(REFRESH_OUTPUT.format(return_value=return_value), "RefreshPkgSource")

    assert output.return_value == return_value
    assert output.out_params == {}


def test_real_method_output_capture_parses() -> None:
    """The WMI plug-in's Delete_OUTPUT capture yields ReturnValue 0."""
    output = parse_method_output(_capture("winrb_invoke_output.xml"), "Delete")

    assert output.return_value == 0


def test_output_of_another_method_is_a_protocol_error() -> None:
    """A reply for a different method is refused."""
    with raises_classified(ProtocolError, match="RefreshPkgSource_OUTPUT"):
        parse_method_output(_capture("winrb_invoke_output.xml"), "RefreshPkgSource")


@pytest.mark.parametrize("return_value", ["", "zero", "0x"])
def test_unreadable_return_values_are_protocol_errors(return_value: str) -> None:
    """A ReturnValue that is not an integer is refused."""
    with raises_classified(ProtocolError):
        parse_method_output(REFRESH_OUTPUT.format(return_value=return_value), "RefreshPkgSource")


def test_missing_return_value_is_a_protocol_error() -> None:
    """An _OUTPUT without ReturnValue is refused."""
    reply = REFRESH_OUTPUT.replace("ReturnValue", "Other").format(return_value=0)

    with raises_classified(ProtocolError, match="ReturnValue"):
        parse_method_output(reply, "RefreshPkgSource")


# --- Enumerate / Pull -----------------------------------------------------------------


def test_enumerate_response_capture_gives_items_and_a_context() -> None:
    """An optimized EnumerateResponse yields its w:Items and the context to Pull with."""
    page = parse_enumeration(_capture("winrb_enumerate_response.xml"))

    assert [item.class_name for item in page.items] == ["Win32_Process", "Win32_Process"]
    assert page.context == "uuid:12AE5286-91FE-48F3-937E-0C22FF1AD7A1"
    assert not page.end_of_sequence and page.has_more
    system = page.items[1]
    assert system.get("Name") == "System"
    assert system.get("CommandLine") is None
    assert system.get("CreationDate") == "2013-04-29T11:43:11.203125-07:00"
    assert (
        system.get("OSName") == "Microsoft Windows Server 2008 R2 Standard |C:\\Windows|\\Device\\Harddisk0\\Partition1"
    )


def test_pull_response_capture_ends_the_sequence() -> None:
    """The final PullResponse has n:Items, no context and EndOfSequence."""
    page = parse_enumeration(_capture("winrb_pull_response.xml"))

    assert len(page.items) == 1 and page.items[0].get("Caption") == "conhost.exe"
    assert page.context is None and page.end_of_sequence and not page.has_more


def test_optimized_enumeration_can_end_in_the_first_reply() -> None:
    """w:EndOfSequence in an EnumerateResponse ends it, with an empty item list allowed."""
    reply = (
        f'<s:Envelope xmlns:s="{NS_SOAP}"><s:Body><n:EnumerateResponse xmlns:n="{NS_ENUMERATION}" '
        f'xmlns:w="{NS_WSMAN}"><n:EnumerationContext/><w:Items/><w:EndOfSequence/>'
        "</n:EnumerateResponse></s:Body></s:Envelope>"
    )
    page = parse_enumeration(reply)

    assert page.items == [] and page.context is None and page.end_of_sequence


def test_a_get_response_is_not_an_enumeration() -> None:
    """parse_enumeration refuses a body that is not an enumeration response."""
    with raises_classified(ProtocolError, match="not an enumeration response"):
        parse_enumeration(GET_RESPONSE)


# --- refusing junk --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"", "not well-formed"),
        (b"<s:Envelope", "not well-formed"),
        (b"HTTP/1.1 500 oops", "not well-formed"),
        (b"<html><body>503</body></html>", "not a SOAP 1.2 Envelope"),
        (b'<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"/>', "not a SOAP 1.2 Envelope"),
        (f'<s:Envelope xmlns:s="{NS_SOAP}"/>'.encode(), "no SOAP Body"),
        (f'<s:Envelope xmlns:s="{NS_SOAP}"><s:Body/></s:Envelope>'.encode(), "Body is empty"),
        (
            b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>',
            "DTD",
        ),
    ],
)
def test_junk_replies_are_protocol_errors(reply: bytes, match: str) -> None:
    """Unparseable, non-SOAP, body-less and DTD-bearing replies are malformed (ProtocolError)."""
    with raises_classified(ProtocolError, match=match):
        parse_instance(reply)


_PARSERS = (
    parse_header,
    parse_instance,
    parse_enumeration,
    lambda xml: parse_method_output(xml, "RefreshPkgSource"),
)

_NAMES = st.sampled_from(
    [
        "Envelope",
        "Header",
        "Body",
        "Fault",
        "Items",
        "EnumerateResponse",
        "PullResponse",
        "EnumerationContext",
        "EndOfSequence",
        "RefreshPkgSource_OUTPUT",
        "ReturnValue",
        "RelatesTo",
        "Datetime",
        "PackageID",
        "Item",
    ]
)
_NAMESPACES = st.sampled_from(
    [NS_SOAP, NS_ENUMERATION, NS_WSMAN, CLASS_URI, "", "http://schemas.dmtf.org/wbem/wscim/1/common"]
)


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def render(name: str, namespace: str, nil: bool, text: str, kids: list[str]) -> str:
        xmlns = f' xmlns="{namespace}"' if namespace else ""
        nil_attr = ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"' if nil else ""
        escaped = text.replace("&", "&amp;").replace("<", "&lt;")
        return f"<{name}{xmlns}{nil_attr}>{escaped}{''.join(kids)}</{name}>"

    return st.builds(render, _NAMES, _NAMESPACES, st.booleans(), st.text(max_size=8), st.lists(children, max_size=3))


_RANDOM_TREES = st.recursive(st.just(""), _element, max_leaves=12).map(
    lambda inner: f'<s:Envelope xmlns:s="{NS_SOAP}"><s:Body>{inner}</s:Body></s:Envelope>'
)


@given(reply=st.one_of(st.binary(max_size=300), st.text(max_size=300), _RANDOM_TREES))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parsers_raise_only_protocol_errors_on_junk(reply: bytes | str) -> None:
    """Random bytes, text and SOAP-shaped trees raise only MalformedReply (or FaultReply for a Fault body)."""
    for parse in _PARSERS:
        try:
            parse(reply)
        except MalformedReply as exc:
            assert type(error_from_wsman(exc)) is ProtocolError
        except FaultReply:
            # Only a Body holding a SOAP Fault may raise it.
            assert isinstance(reply, str) and f'<Fault xmlns="{NS_SOAP}"' in reply
