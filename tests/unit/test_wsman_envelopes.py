"""Unit tests of the WS-Man request envelopes (worker.wsman.envelopes) and input validation."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from winrm.protocol import Protocol

from errors import InvalidRequestError
from testing.canned_http import CannedAdapter
from testing.classified import raises_classified
from worker.wsman import (
    Envelope,
    build_enumerate,
    build_get,
    build_invoke,
    build_pull,
    build_release,
)
from worker.wsman.namespaces import (
    ACTION_ENUMERATE,
    ACTION_GET,
    ACTION_PULL,
    ACTION_RELEASE,
    ADDRESS_ANONYMOUS,
    DIALECT_WQL,
    NS_ADDRESSING,
    NS_ENUMERATION,
    NS_SOAP,
    NS_WSMAN,
    NS_WSMV,
    NS_XML,
    qname,
)
from worker.wsman.selectors import enumeration_uri

TO_URL = "http://sccm.lab.local:5985/wsman"
CLASS_URI = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_DriverPackage"
MESSAGE_ID = "uuid:11111111-2222-3333-4444-555555555555"
HOSTILE = "<x a=\"1\" b='2'>&amp; ]]> </x>"


def _parse(envelope: Envelope) -> ET.Element:
    return ET.fromstring(envelope.xml)


def _header(root: ET.Element, namespace: str, name: str) -> ET.Element:
    element = root.find(f"{qname(NS_SOAP, 'Header')}/{qname(namespace, name)}")
    assert element is not None, f"header {name} missing"
    return element


def _selectors(root: ET.Element) -> dict[str, str]:
    path = f"{qname(NS_SOAP, 'Header')}/{qname(NS_WSMAN, 'SelectorSet')}/{qname(NS_WSMAN, 'Selector')}"
    return {el.get("Name", ""): el.text or "" for el in root.findall(path)}


def _body_child(root: ET.Element) -> ET.Element:
    body = root.find(qname(NS_SOAP, "Body"))
    assert body is not None
    children = list(body)
    assert len(children) == 1
    return children[0]


def _get(**overrides: object) -> Envelope:
    arguments: dict[str, object] = {
        "to_url": TO_URL,
        "resource_uri": CLASS_URI,
        "selectors": {"PackageID": "PS100012"},
        "operation_timeout_s": 20,
        "message_id": MESSAGE_ID,
    }
    arguments.update(overrides)
    return build_get(**arguments)  # type: ignore[arg-type]  # overrides are deliberately ill-typed


# --- envelope shape -------------------------------------------------------------------


def test_get_envelope_carries_every_header_field_of_ms_wsmv() -> None:
    """A Get envelope is SOAP 1.2 with the header fields and values MS-WSMV examples show."""
    envelope = _get(max_envelope_size_bytes=153600)
    root = _parse(envelope)
    must_understand = qname(NS_SOAP, "mustUnderstand")

    assert root.tag == qname(NS_SOAP, "Envelope")
    assert _header(root, NS_ADDRESSING, "To").text == TO_URL
    assert _header(root, NS_WSMAN, "ResourceURI").text == CLASS_URI
    assert _header(root, NS_WSMAN, "ResourceURI").get(must_understand) == "true"
    reply_to = _header(root, NS_ADDRESSING, "ReplyTo").find(qname(NS_ADDRESSING, "Address"))
    assert reply_to is not None and reply_to.text == ADDRESS_ANONYMOUS
    assert _header(root, NS_ADDRESSING, "Action").text == ACTION_GET
    assert _header(root, NS_ADDRESSING, "Action").get(must_understand) == "true"
    assert _header(root, NS_WSMAN, "MaxEnvelopeSize").text == "153600"
    assert _header(root, NS_ADDRESSING, "MessageID").text == MESSAGE_ID
    assert _header(root, NS_WSMAN, "Locale").get(qname(NS_XML, "lang")) == "en-US"
    assert _header(root, NS_WSMV, "DataLocale").get(qname(NS_XML, "lang")) == "en-US"
    assert _header(root, NS_WSMAN, "OperationTimeout").text == "PT20.000S"
    assert _selectors(root) == {"PackageID": "PS100012"}
    body = root.find(qname(NS_SOAP, "Body"))
    assert body is not None and len(body) == 0
    assert envelope.message_id == MESSAGE_ID and envelope.action == ACTION_GET


def test_invoke_envelope_targets_the_method_with_an_empty_input_body() -> None:
    """An Invoke carries Action <ResourceURI>/RefreshPkgSource and a RefreshPkgSource_INPUT body."""
    envelope = build_invoke(
        to_url=TO_URL,
        resource_uri=CLASS_URI,
        selectors={"PackageID": "PS100012"},
        operation_timeout_s=30,
        message_id=MESSAGE_ID,
    )
    root = _parse(envelope)
    body = _body_child(root)

    assert envelope.action == f"{CLASS_URI}/RefreshPkgSource"
    assert _header(root, NS_ADDRESSING, "Action").text == f"{CLASS_URI}/RefreshPkgSource"
    assert body.tag == qname(CLASS_URI, "RefreshPkgSource_INPUT")
    assert len(body) == 0
    assert _selectors(root) == {"PackageID": "PS100012"}


def test_enumerate_envelope_carries_an_optimized_wql_filter() -> None:
    """An Enumerate body has OptimizeEnumeration, MaxElements and a WQL Filter, no selectors."""
    wql = "SELECT * FROM SMS_DriverPackage WHERE PackageID = 'PS100012'"
    envelope = build_enumerate(
        to_url=TO_URL,
        resource_uri=enumeration_uri("PS1"),
        wql=wql,
        max_elements=50,
        operation_timeout_s=20,
    )
    root = _parse(envelope)
    enumerate_ = _body_child(root)
    filter_ = enumerate_.find(qname(NS_WSMAN, "Filter"))

    assert envelope.action == ACTION_ENUMERATE
    assert enumerate_.tag == qname(NS_ENUMERATION, "Enumerate")
    assert [child.tag for child in enumerate_] == [
        qname(NS_WSMAN, "OptimizeEnumeration"),
        qname(NS_WSMAN, "MaxElements"),
        qname(NS_WSMAN, "Filter"),
    ]
    assert enumerate_.findtext(qname(NS_WSMAN, "MaxElements")) == "50"
    assert filter_ is not None and filter_.get("Dialect") == DIALECT_WQL and filter_.text == wql
    assert _header(root, NS_WSMAN, "ResourceURI").text.endswith("/site_PS1/*")  # type: ignore[union-attr]
    assert _selectors(root) == {}


def test_pull_and_release_envelopes_carry_the_enumeration_context() -> None:
    """Pull and Release send the server's EnumerationContext back unchanged."""
    context = "uuid:12AE5286-91FE-48F3-937E-0C22FF1AD7A1"
    uri = enumeration_uri("PS1")
    pull = build_pull(to_url=TO_URL, resource_uri=uri, context=context, max_elements=25, operation_timeout_s=20)
    release = build_release(to_url=TO_URL, resource_uri=uri, context=context, operation_timeout_s=20)

    pull_body = _body_child(_parse(pull))
    release_body = _body_child(_parse(release))
    assert pull.action == ACTION_PULL and release.action == ACTION_RELEASE
    assert pull_body.findtext(qname(NS_ENUMERATION, "EnumerationContext")) == context
    assert pull_body.findtext(qname(NS_ENUMERATION, "MaxElements")) == "25"
    assert release_body.findtext(qname(NS_ENUMERATION, "EnumerationContext")) == context


def test_default_message_ids_are_fresh_upper_case_uuids() -> None:
    """Without an injected MessageID each envelope gets a new `uuid:<UPPER>` one."""
    first = build_get(to_url=TO_URL, resource_uri=CLASS_URI, selectors={}, operation_timeout_s=5)
    second = build_get(to_url=TO_URL, resource_uri=CLASS_URI, selectors={}, operation_timeout_s=5)

    pattern = re.compile(r"uuid:[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
    assert pattern.fullmatch(first.message_id) and pattern.fullmatch(second.message_id)
    assert first.message_id != second.message_id
    assert _header(_parse(first), NS_ADDRESSING, "MessageID").text == first.message_id


def test_fractional_timeouts_render_as_milliseconds() -> None:
    """operation_timeout_s renders as PT<seconds>.<millis>S."""
    root = _parse(_get(operation_timeout_s=1.5))

    assert _header(root, NS_WSMAN, "OperationTimeout").text == "PT1.500S"


def test_envelopes_are_utf8_bytes() -> None:
    """The envelope is UTF-8 bytes with a declaration, and non-ASCII text survives."""
    envelope = _get(selectors={"Name": "Pilote réseau Ω"})

    assert isinstance(envelope.xml, bytes)
    assert envelope.xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert envelope.text == envelope.xml.decode("utf-8")
    assert _selectors(_parse(envelope)) == {"Name": "Pilote réseau Ω"}


# --- escaping and refusals ------------------------------------------------------------


def test_hostile_selector_values_are_escaped_and_round_trip() -> None:
    """Markup, ampersands and quotes in a selector value stay data, not structure."""
    root = _parse(_get(selectors={"PackageID": HOSTILE}))

    assert _selectors(root) == {"PackageID": HOSTILE}
    assert len(list(root.iter(qname(NS_WSMAN, "Selector")))) == 1


def test_hostile_wql_and_context_are_escaped_and_round_trip() -> None:
    """A WQL filter or enumeration context holding markup is carried as text."""
    enumerate_root = _parse(
        build_enumerate(to_url=TO_URL, resource_uri=CLASS_URI, wql=HOSTILE, max_elements=1, operation_timeout_s=1)
    )
    pull_root = _parse(
        build_pull(to_url=TO_URL, resource_uri=CLASS_URI, context=HOSTILE, max_elements=1, operation_timeout_s=1)
    )

    assert next(enumerate_root.iter(qname(NS_WSMAN, "Filter"))).text == HOSTILE
    assert next(pull_root.iter(qname(NS_ENUMERATION, "EnumerationContext"))).text == HOSTILE


def test_hostile_urls_and_message_ids_are_escaped() -> None:
    """To, ResourceURI and an injected MessageID are escaped like any other text."""
    envelope = _get(to_url=f"{TO_URL}?{HOSTILE}", resource_uri=f"{CLASS_URI}{HOSTILE}", message_id=HOSTILE)
    root = _parse(envelope)

    assert _header(root, NS_ADDRESSING, "To").text == f"{TO_URL}?{HOSTILE}"
    assert _header(root, NS_WSMAN, "ResourceURI").text == f"{CLASS_URI}{HOSTILE}"
    assert _header(root, NS_ADDRESSING, "MessageID").text == HOSTILE


@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))))
@settings(max_examples=150, deadline=None)
def test_any_printable_selector_value_round_trips(value: str) -> None:
    """Every printable selector value parses back to itself and adds no elements."""
    root = _parse(_get(selectors={"PackageID": value}))

    assert _selectors(root) == {"PackageID": value}


@pytest.mark.parametrize("value", ["a\x00b", "bell\x07", "\x1b[31m", "\ufffe"])
def test_characters_xml_cannot_carry_are_refused(value: str) -> None:
    """Control characters XML 1.0 cannot represent are refused (an invalid request), not sent as bad XML."""
    with raises_classified(InvalidRequestError, match="XML cannot carry"):
        _get(selectors={"PackageID": value})


@pytest.mark.parametrize("name", ["Package ID", 'x"y', "<a>", "", "1abc"])
def test_selector_names_must_be_identifiers(name: str) -> None:
    """A selector name goes in an attribute: only identifiers are accepted."""
    with raises_classified(InvalidRequestError, match="selector name"):
        _get(selectors={name: "PS100012"})


@pytest.mark.parametrize("method", ["Refresh PkgSource", "x/y", "<M>", "", "9Go"])
def test_method_names_must_be_identifiers(method: str) -> None:
    """The method becomes an element name and part of the Action: identifiers only."""
    with raises_classified(InvalidRequestError, match="method name"):
        build_invoke(to_url=TO_URL, resource_uri=CLASS_URI, selectors={}, operation_timeout_s=1, method=method)


@pytest.mark.parametrize("timeout_s", [0, -1, math.nan, math.inf, True, "20"])
def test_operation_timeout_must_be_a_positive_finite_number(timeout_s: object) -> None:
    """Zero, negative, NaN, infinite, bool and string timeouts are refused."""
    with raises_classified(InvalidRequestError, match="operation_timeout_s"):
        _get(operation_timeout_s=timeout_s)


@pytest.mark.parametrize("size", [0, -5, True, 1.5])
def test_max_envelope_size_must_be_a_positive_integer(size: object) -> None:
    """MaxEnvelopeSize accepts positive integers only."""
    with raises_classified(InvalidRequestError, match="max_envelope_size_bytes"):
        _get(max_envelope_size_bytes=size)


def test_max_elements_must_be_a_positive_integer() -> None:
    """An Enumerate asking for zero elements is refused."""
    with raises_classified(InvalidRequestError, match="max_elements"):
        build_enumerate(
            to_url=TO_URL, resource_uri=CLASS_URI, wql="SELECT * FROM X", max_elements=0, operation_timeout_s=1
        )


@pytest.mark.parametrize("locale", ["en US", 'en"', "", "x" * 9])
def test_locales_must_look_like_language_tags(locale: str) -> None:
    """The locale lands in an xml:lang attribute: only RFC 3066-like tags are accepted."""
    with raises_classified(InvalidRequestError, match="locale"):
        _get(locale=locale)


# --- pywinrm sends them ---------------------------------------------------------------


def _protocol_with(adapter: CannedAdapter) -> Protocol:
    protocol = Protocol(
        endpoint=TO_URL,
        transport="plaintext",
        username="LAB\\svc",
        password="not-a-real-password",
        message_encryption="never",
        server_cert_validation="ignore",  # plain HTTP; also keeps pywinrm off REQUESTS_CA_BUNDLE
        proxy=None,
    )
    session = protocol.transport.build_session()
    session.mount("http://", adapter)
    return protocol


def test_pywinrm_sends_the_envelope_bytes_unchanged() -> None:
    """pywinrm's transport accepts the bytes and its Protocol the text; both reach the wire as built."""
    envelope = _get()
    adapter = CannedAdapter(b"<ok/>")
    protocol = _protocol_with(adapter)

    assert protocol.transport.send_message(envelope.xml) == b"<ok/>"
    assert protocol.send_message(envelope.text) == b"<ok/>"
    assert adapter.bodies == [envelope.xml, envelope.xml]
