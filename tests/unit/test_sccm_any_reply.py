"""Property: whatever the provider answers, the client ends with a typed result or a RefreshError.

Replies are XML-ish documents (random nesting, DTDs with internal, external and parameter
entities, declared and actual encodings that may disagree, huge text, random namespaces, faults
with random codes) or raw bytes, at random HTTP statuses. They go through the whole client path:
`SccmClient` -> `ProviderTransport` -> unmodified pywinrm -> a canned HTTP adapter. Any other
exception, or a peak of traced memory past the bound, fails the property.
"""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from errors import RefreshError
from testing.canned_http import CannedAdapter, canned_client, message_id_of
from worker.domain.packages import PackageInfo
from worker.wsman import WmiInstance

MB = 1024 * 1024
# The largest reply generated is about 1.2 MB; requests and the adapter hold two copies of it.
PEAK_BOUND_BYTES = 32 * MB
# Requests answered with the generated reply; later ones (Pulls of a never-ending enumeration)
# get an HTTP 503, so an enumeration cannot loop for its 10,000 Pulls.
_GENERATED_REPLIES = 3

NAMESPACES = [
    "http://www.w3.org/2003/05/soap-envelope",
    "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1/SMS_DriverPackage",
    "http://schemas.dmtf.org/wbem/wscim/1/common",
    "urn:random",
    "",
]
NAMES = [
    "Envelope",
    "Header",
    "Body",
    "Fault",
    "Code",
    "Subcode",
    "Value",
    "Reason",
    "Text",
    "Detail",
    "WSManFault",
    "ProviderFault",
    "EnumerateResponse",
    "PullResponse",
    "EnumerationContext",
    "Items",
    "EndOfSequence",
    "SMS_DriverPackage",
    "RefreshPkgSource_OUTPUT",
    "ReturnValue",
    "PackageID",
    "SourceVersion",
    "PkgSourceFlag",
    "RelatesTo",
    "Datetime",
]
NS_SOAP = NAMESPACES[0]

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Co")), max_size=20)
_escaped_text = _text.map(lambda t: t.replace("&", "&amp;").replace("<", "&lt;"))
_codes = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.integers(min_value=0, max_value=2**32).map(hex),
    st.sampled_from(["87", "2147942487", "2150858793", "2150859174", "0x80041001", "-2147217406", ""]),
    _escaped_text,
)
_entity_refs = st.sampled_from(["", "&e;", "&e;" * 90, "&ext;", "&undefined;", "&#65;", "&#x0;", "&lt;"])


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def render(name: str, namespace: str, text: str, ref: str, nil: bool, kids: list[str]) -> str:  # noqa: PLR0917 - st.builds passes positionally
        xmlns = f' xmlns="{namespace}"' if namespace else ""
        nil_attr = ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"' if nil else ""
        return f"<{name}{xmlns}{nil_attr}>{text}{ref}{''.join(kids)}</{name}>"

    return st.builds(
        render,
        st.sampled_from(NAMES),
        st.sampled_from(NAMESPACES),
        _escaped_text,
        _entity_refs,
        st.booleans(),
        st.lists(children, max_size=4),
    )


_trees = st.recursive(_escaped_text, _element, max_leaves=20)


@st.composite
def _faults(draw: st.DrawFn) -> str:
    code = draw(st.sampled_from(["s:Sender", "s:Receiver", "s:MustUnderstand", "", "junk"]))
    subcode = draw(
        st.sampled_from(["w:TimedOut", "w:QuotaLimit", "w:InvalidParameter", "a:DestinationUnreachable", "x:Y", ""])
    )
    return (
        f"<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f"<s:Reason><s:Text>{draw(_escaped_text)}{draw(_entity_refs)}</s:Text></s:Reason><s:Detail>"
        f'<f:WSManFault xmlns:f="{NAMESPACES[3]}" Code="{draw(_codes)}"><f:Message><f:ProviderFault>'
        f'<f:WSManFault Code="{draw(_codes)}"/></f:ProviderFault></f:Message></f:WSManFault>'
        f"<p:MSFT_WmiError xmlns:p='urn:p'><p:error_Code>{draw(_codes)}</p:error_Code></p:MSFT_WmiError>"
        "</s:Detail></s:Fault>"
    )


@st.composite
def _big(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["nested", "siblings", "text", "attributes"]))
    count = draw(st.integers(min_value=1, max_value=150_000))
    if kind == "nested":
        return "<a>" * count + "</a>" * count
    if kind == "siblings":
        return "<SMS_DriverPackage>" + "<a/>" * count + "</SMS_DriverPackage>"
    if kind == "text":
        return f"<SMS_DriverPackage><Name>{'x' * (count * 8)}</Name></SMS_DriverPackage>"
    attributes = " ".join(f'a{i}=""' for i in range(count // 2))
    return f"<SMS_DriverPackage {attributes}/>"


_ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "latin-1"]
_DTDS = [
    "",
    '<!DOCTYPE s:Envelope [<!ENTITY e "' + "A" * 1000 + '">]>',
    '<!DOCTYPE s:Envelope [<!ENTITY ext SYSTEM "file:///etc/passwd">]>',
    "<!DOCTYPE s:Envelope [<!ENTITY % p \"<!ENTITY e 'x'>\"> %p;]>",
    '<!DOCTYPE s:Envelope SYSTEM "http://127.0.0.1:9/evil.dtd">',
    '<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY e "&b;&b;&b;&b;">]>',
]


CLASS_URI = NAMESPACES[4]


OPERATIONS = ("get", "refresh", "enumerate")


@st.composite
def _valid_payloads(draw: st.DrawFn, operation: str) -> str:
    """A well-formed answer to `operation`, with random text in its values."""
    value = draw(_escaped_text) + draw(st.sampled_from(["", "", "", "&lt;", "&e;"]))
    instance = (
        f'<p:SMS_DriverPackage xmlns:p="{CLASS_URI}"><p:PackageID>PS100012</p:PackageID><p:Name>{value}</p:Name>'
        f"<p:SourceVersion>{draw(st.sampled_from(['7', '7', '', 'x']))}</p:SourceVersion></p:SMS_DriverPackage>"
    )
    if operation == "get":
        return instance
    if operation == "refresh":
        return (
            f'<p:RefreshPkgSource_OUTPUT xmlns:p="{CLASS_URI}"><p:ReturnValue>'
            f"{draw(st.sampled_from(['0', '21', ' 1 ', 'zero']))}</p:ReturnValue></p:RefreshPkgSource_OUTPUT>"
        )
    return (
        f'<n:EnumerateResponse xmlns:n="{NAMESPACES[1]}" xmlns:w="{NAMESPACES[2]}">'
        f"<n:EnumerationContext>{draw(st.sampled_from(['', 'ctx']))}</n:EnumerationContext>"
        f"<w:Items>{instance * draw(st.integers(min_value=0, max_value=30))}</w:Items>"
        f"{draw(st.sampled_from(['', '<w:EndOfSequence/>']))}</n:EnumerateResponse>"
    )


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes | None  # raw bytes, or None: `document` rendered per request (RelatesTo may match)
    document: str
    encoding: str


def _document(prolog: str, relates_to: str, payload: str) -> str:
    return (
        f'{prolog}<s:Envelope xmlns:s="{NS_SOAP}" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing">'
        f"<s:Header><a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{payload}</s:Body></s:Envelope>"
    )


@st.composite
def _hostile(draw: st.DrawFn, operation: str) -> Reply:
    status = draw(st.sampled_from([200, 200, 200, 500, 400, 401, 503]))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return Reply(status, draw(st.binary(max_size=400)), "", "utf-8")
    declared = draw(st.sampled_from(["", "utf-8", "utf-16", "iso-8859-1", "ebcdic-nonsense"]))
    encoding = draw(st.sampled_from(_ENCODINGS))
    prolog = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    prolog += f"<!--{'c' * draw(st.sampled_from([0, 10, 5000]))}-->" + draw(st.sampled_from(_DTDS))
    payload = draw(st.one_of(_valid_payloads(operation), _trees, _faults(), _big()))
    relates_to = draw(st.sampled_from(["{relates_to}", "uuid:someone-else", ""]))
    return Reply(status, None, _document(prolog, relates_to, payload), encoding)


@st.composite
def _clean(draw: st.DrawFn, operation: str) -> Reply:
    """A reply that should parse: matching encoding, no DTD, our RelatesTo, HTTP 200."""
    declared, encoding = draw(st.sampled_from([("", "utf-8"), ("utf-16", "utf-16"), ("iso-8859-1", "latin-1")]))
    prolog = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    return Reply(200, None, _document(prolog, "{relates_to}", draw(_valid_payloads(operation))), encoding)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, Reply]:
    operation = draw(st.sampled_from(OPERATIONS))
    return operation, draw(st.one_of(_clean(operation), _hostile(operation)))


def _adapter(reply: Reply) -> CannedAdapter:
    answered = itertools.count()

    def respond(request: bytes) -> tuple[int, bytes]:
        if next(answered) >= _GENERATED_REPLIES:
            return 503, b""
        if reply.body is not None:
            return reply.status, reply.body
        text = reply.document.replace("{relates_to}", message_id_of(request))
        return reply.status, text.encode(reply.encoding, errors="replace")

    return CannedAdapter(respond=respond)


Outcome = PackageInfo | int | list[WmiInstance] | RefreshError


def _call(reply: Reply, operation: str) -> Outcome:
    client = canned_client(_adapter(reply))
    try:
        if operation == "get":
            return client.get_package("SMS_DriverPackage", "PS100012")
        if operation == "refresh":
            return client.refresh("SMS_DriverPackage", "PS100012")
        items = client.enumerate("SELECT * FROM SMS_DriverPackage", page_size=10)
        try:
            return list(itertools.islice(items, 25))
        finally:
            items.close()
    except RefreshError as exc:
        return exc


@given(case=_cases())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_any_reply_ends_as_a_typed_result_or_a_refresh_error(case: tuple[str, Reply]) -> None:
    """Get, Invoke and Enumerate answered with anything: a typed result or a RefreshError, memory bounded."""
    operation, reply = case
    tracemalloc.start()
    try:
        outcome = _call(reply, operation)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    event(f"{operation}: {type(outcome).__name__}")
    assert isinstance(outcome, PackageInfo | int | list | RefreshError)
    assert peak < PEAK_BOUND_BYTES
