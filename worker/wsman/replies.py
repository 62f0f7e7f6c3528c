"""Parse WS-Man replies from the WinRM WMI plug-in into typed values.

Liberal in what it accepts: any prefixes (namespaces are matched by URI), `xml:lang` and
`xsi:type` attributes, pretty-printing whitespace. Strict in what it trusts: anything that
is not the reply we asked for raises `MalformedReply`, never a raw `ParseError`, a Body
holding a Fault raises `FaultReply`, and the reply's RelatesTo is checked against our
MessageID (pywinrm does not do it). Every reply is parsed by `soap_parser.parse_envelope`.

WMI instances over WS-Man ([MS-WSMV] 3.1.4.1.11, DSP0230): one child element per property,
`xsi:nil="true"` for NULL, a `cim:Datetime` (or `cim:Date`/`cim:Time`/`cim:Interval`)
child for datetimes, and one repeated element per item for arrays.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from worker.wsman.exceptions import FaultReply, MalformedReply
from worker.wsman.faults import fault_from_element
from worker.wsman.namespaces import (
    NS_ADDRESSING,
    NS_CIM,
    NS_ENUMERATION,
    NS_SOAP,
    NS_WSMAN,
    NS_XSI,
    qname,
)
from worker.wsman.soap_parser import echo, local_name, parse_envelope

__all__ = [
    "EnumerationPage",
    "MethodOutput",
    "PropertyValue",
    "ReplyHeader",
    "WmiInstance",
    "body_element",
    "check_action",
    "check_relates_to",
    "parse_enumeration",
    "parse_header",
    "parse_instance",
    "parse_method_output",
]

PropertyValue = str | None | list[str | None]

_TRUE_VALUES = frozenset({"true", "1"})
# Wrappers a property's value may come in; their text is the value (DSP0230 cim common types).
_CIM_SCALAR_WRAPPERS = frozenset({"Datetime", "Date", "Time", "Interval", "CIMDateTime"})
# Children of an instance element that are not properties (cim:Location, EPR parts).
_NON_PROPERTY_NAMESPACES = frozenset({NS_CIM, NS_ADDRESSING, NS_WSMAN})
_XSI_NIL = qname(NS_XSI, "nil")
_RETURN_VALUE = "ReturnValue"
_OUTPUT_SUFFIX = "_OUTPUT"


@dataclass(frozen=True)
class ReplyHeader:
    """The WS-Addressing header fields of a reply (each None when absent)."""

    action: str | None
    message_id: str | None
    relates_to: str | None


@dataclass(frozen=True)
class WmiInstance:
    """One WMI instance: its class and its properties as text (None for NULL, list for arrays)."""

    class_name: str
    properties: dict[str, PropertyValue] = field(default_factory=dict)

    def get(self, name: str) -> PropertyValue:
        """The value of property `name`, or None when the reply did not carry it."""
        return self.properties.get(name)

    def get_list(self, name: str) -> list[str | None]:
        """Property `name` as a list: a single element is a one-item array, absent/NULL is empty."""
        value = self.properties.get(name)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class MethodOutput:
    """The `<Method>_OUTPUT` of a WMI method call."""

    return_value: int
    out_params: dict[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class EnumerationPage:
    """One EnumerateResponse or PullResponse: its items and whether to Pull again."""

    items: list[WmiInstance]
    context: str | None
    end_of_sequence: bool

    @property
    def has_more(self) -> bool:
        """True while the server handed back a context and did not say EndOfSequence."""
        return self.context is not None and not self.end_of_sequence


def parse_header(xml: bytes | str) -> ReplyHeader:
    """Action, MessageID and RelatesTo of a reply's header."""
    header = parse_envelope(xml).find(qname(NS_SOAP, "Header"))
    if header is None:
        return ReplyHeader(action=None, message_id=None, relates_to=None)
    return ReplyHeader(
        action=_child_text(header, NS_ADDRESSING, "Action"),
        message_id=_child_text(header, NS_ADDRESSING, "MessageID"),
        relates_to=_child_text(header, NS_ADDRESSING, "RelatesTo"),
    )


def check_relates_to(header: ReplyHeader, expected_message_id: str) -> None:
    """MalformedReply unless the reply relates to our request (UUIDs compared case-insensitively)."""
    if header.relates_to is None:
        raise MalformedReply(f"reply has no RelatesTo; expected {echo(expected_message_id)}")
    if header.relates_to.strip().lower() != expected_message_id.strip().lower():
        raise MalformedReply(
            f"reply RelatesTo {echo(header.relates_to)} does not match MessageID {echo(expected_message_id)}"
        )


def check_action(header: ReplyHeader, expected_action: str) -> None:
    """MalformedReply unless the reply carries the Action we expect."""
    if header.action != expected_action:
        raise MalformedReply(f"reply Action {echo(header.action)} is not {echo(expected_action)}")


def body_element(root: ET.Element) -> ET.Element:
    """The single payload element of the Body; a Fault raises FaultReply."""
    body = root.find(qname(NS_SOAP, "Body"))
    if body is None:
        raise MalformedReply("reply has no SOAP Body")
    payload = next(iter(body), None)
    if payload is None:
        raise MalformedReply("reply Body is empty")
    if payload.tag == qname(NS_SOAP, "Fault"):
        # A fault in a 200 reply is still a fault: it means what the same fault at HTTP 500 means.
        raise FaultReply(fault_from_element(payload))
    return payload


def parse_instance(xml: bytes | str) -> WmiInstance:
    """The instance in a GetResponse body."""
    return _instance_from_element(body_element(parse_envelope(xml)))


def parse_method_output(xml: bytes | str, method: str) -> MethodOutput:
    """ReturnValue and out-parameters of a `<method>_OUTPUT` body."""
    output = body_element(parse_envelope(xml))
    expected = f"{method}{_OUTPUT_SUFFIX}"
    if local_name(output.tag).lower() != expected.lower():
        raise MalformedReply(f"reply body is {echo(local_name(output.tag))}, not {echo(expected)}")
    params = _properties(output)
    raw = params.pop(_RETURN_VALUE, None)
    if not isinstance(raw, str):
        raise MalformedReply(f"{expected} carries no single {_RETURN_VALUE}")
    return MethodOutput(return_value=_parse_int(raw, _RETURN_VALUE), out_params=params)


def parse_enumeration(xml: bytes | str) -> EnumerationPage:
    """Items, context and end-of-sequence of an EnumerateResponse or a PullResponse."""
    response = body_element(parse_envelope(xml))
    if response.tag not in (qname(NS_ENUMERATION, "EnumerateResponse"), qname(NS_ENUMERATION, "PullResponse")):
        raise MalformedReply(f"reply body is {echo(local_name(response.tag))}, not an enumeration response")
    context: str | None = None
    end_of_sequence = False
    items: list[WmiInstance] = []
    for child in response:
        name = local_name(child.tag)
        if child.tag == qname(NS_ENUMERATION, "EnumerationContext"):
            context = (child.text or "").strip() or None
        # Optimized EnumerateResponses use w:Items / w:EndOfSequence, PullResponses n:Items / n:EndOfSequence.
        elif name == "EndOfSequence" and _namespace(child.tag) in (NS_ENUMERATION, NS_WSMAN):
            end_of_sequence = True
        elif name == "Items" and _namespace(child.tag) in (NS_ENUMERATION, NS_WSMAN):
            items.extend(_instance_from_item(item) for item in child)
    return EnumerationPage(items=items, context=context, end_of_sequence=end_of_sequence)


def _instance_from_item(item: ET.Element) -> WmiInstance:
    # EnumerationMode EnumerateObjectAndEPR wraps each object in w:Item next to its EPR.
    if item.tag == qname(NS_WSMAN, "Item"):
        for child in item:
            if _namespace(child.tag) not in _NON_PROPERTY_NAMESPACES:
                return _instance_from_element(child)
        raise MalformedReply("enumeration item carries no instance")
    return _instance_from_element(item)


def _instance_from_element(element: ET.Element) -> WmiInstance:
    return WmiInstance(class_name=local_name(element.tag), properties=_properties(element))


def _properties(element: ET.Element) -> dict[str, PropertyValue]:
    properties: dict[str, PropertyValue] = {}
    for child in element:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        # "{namespace}local" split once (this runs for every property of every enumerated package).
        namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else (None, "", tag)
        if namespace in _NON_PROPERTY_NAMESPACES:
            continue
        value = _property_value(child)
        if name not in properties:
            properties[name] = value
            continue
        # A repeated element is an array property (DSP0230 7.2.3).
        existing = properties[name]
        if isinstance(existing, list):
            existing.append(value)
        else:
            properties[name] = [existing, value]
    return properties


def _property_value(element: ET.Element) -> str | None:
    nil = element.get(_XSI_NIL)
    if nil is not None and nil.strip().lower() in _TRUE_VALUES:
        return None
    if not len(element):
        return element.text or ""
    wrapper = element[0]
    if _namespace(wrapper.tag) == NS_CIM and local_name(wrapper.tag) in _CIM_SCALAR_WRAPPERS:
        return (wrapper.text or "").strip()
    # An embedded object: the worker reads no such property, so keep its text only.
    return "".join(element.itertext()).strip()


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise MalformedReply(f"{what} is {echo(text)}, not an integer") from None


def _child_text(parent: ET.Element, namespace: str, local_name: str) -> str | None:
    child = parent.find(qname(namespace, local_name))
    if child is None:
        return None
    return (child.text or "").strip()


def _namespace(tag: str) -> str | None:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else None
