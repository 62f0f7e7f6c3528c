"""Hostile WS-Man replies, seeded (pure: bytes out, no I/O).

What a hostile or broken SMS Provider (or anything squatting on its port) can answer to a Get or
an Invoke RefreshPkgSource. `reply_for(kind, rng, request)` builds one; `plan_kinds(count, seed)`
picks the kinds of a run: every kind once first (so a small run still meets each), then a seeded
weighted draw. Big bodies are produced as chunks (sent chunked), so the server stays small.

Kinds (HTTP status in brackets, `200|500` = drawn):

    valid               a correct reply: a package instance, or RefreshPkgSource_OUTPUT [200]
    hostile_values      well-formed, with garbage property values and ReturnValues [200]
    dtd_after_comment   a comment long enough to keep expat's amplification ratio below its
                        limit (1.3-5 MB), then a DTD whose entities expand to 64-256 MB [200|500]
    dtd_utf16           UTF-16 with a BOM and a DTD (10 MB expansion) [200|500]
    nested              2,000,000 nested elements in the body [200|500]
    siblings            3,500,000 sibling elements in the body [200|500]
    fault_random_codes  a SOAP fault with random WSManFault / MSFT_WmiError codes and text,
                        UTF-8 or UTF-16 [500]
    fault_utf16         a well-formed fault encoded as UTF-16 [500]
    truncated           a valid reply cut at a random byte [200|500]
    wrong_relates_to    a valid reply whose RelatesTo is missing, another id, or repeated [200]
    random_bytes        0-4 KB of random bytes, random status and content type
    html_error          HTTP.sys' HTML error page [500|503|502]
    oversize            a valid reply padded past 16 MB [200]
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from emulator.sms import PROPERTY_NAMES, render_instance
from emulator.wsman import escape, render_get_response, render_invoke_response
from worker.wsman.namespaces import ACTION_GET_RESPONSE

__all__ = ["HEAVY_KINDS", "KINDS", "Reply", "WsmanCall", "plan_kinds", "reply_for"]

SOAP_XML: Final = "application/soap+xml;charset=UTF-8"
SOAP_UTF16: Final = "application/soap+xml;charset=UTF-16"
NS_S: Final = "http://www.w3.org/2003/05/soap-envelope"
NS_A: Final = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_F: Final = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_WMI: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError"
CLASS_URI: Final = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_HX1/SMS_Package"
NESTED_DEPTH: Final = 2_000_000
SIBLINGS: Final = 3_500_000
OVERSIZE_BYTES: Final = 17 * 1024 * 1024
CHUNK: Final = 1 << 20

# Weights of the seeded draw after every kind has appeared once; heavy kinds are rarer.
WEIGHTS: Final[dict[str, int]] = {
    "valid": 10,
    "hostile_values": 10,
    "dtd_after_comment": 2,
    "dtd_utf16": 2,
    "nested": 2,
    "siblings": 2,
    "fault_random_codes": 14,
    "fault_utf16": 6,
    "truncated": 14,
    "wrong_relates_to": 8,
    "random_bytes": 14,
    "html_error": 5,
    "oversize": 1,
}
KINDS: Final = tuple(WEIGHTS)
HEAVY_KINDS: Final = frozenset({"dtd_after_comment", "dtd_utf16", "nested", "siblings", "oversize"})


@dataclass(frozen=True)
class WsmanCall:
    """What the hostile server read of the request: enough to answer in kind."""

    message_id: str | None
    operation: str  # "get" or "invoke"


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    chunks: Sequence[bytes] | Iterator[bytes]


def plan_kinds(count: int, seed: int) -> list[str]:
    """The kind of each reply of a run: every kind once (shuffled), then a weighted draw."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    rest = rng.choices(KINDS, weights=[WEIGHTS[kind] for kind in KINDS], k=max(0, count - len(first)))
    return (first + rest)[:count]


def _instance(rng: random.Random, *, hostile: bool) -> str:
    properties: dict[str, str | int | None] = {name: f"value-{rng.randrange(1000)}" for name in PROPERTY_NAMES}
    properties.update(PackageID="HX100012", PkgSourceFlag=2, SourceVersion=rng.randrange(100), PackageType=0)
    properties.update(ActionInProgress=0, StoredPkgVersion=1)
    properties.pop("SourceDate", None)
    properties.pop("LastRefreshTime", None)
    if hostile:
        garbage = ("", "-1", "4294967296", "1e9", "0x10", "NaN", "١٢٣", " 7 ", "9" * 400, "\u202e12")
        for name in ("SourceVersion", "PkgSourceFlag", "PackageType", "ActionInProgress"):
            properties[name] = rng.choice(garbage)
        if rng.random() < 0.3:
            properties["PackageID"] = rng.choice(("", "   ", None, "x" * 5000))
    return render_instance("SMS_Package", CLASS_URI, properties)


def _valid_body(call: WsmanCall, rng: random.Random, *, hostile: bool = False, relates_to: str | None = None) -> bytes:
    relates = relates_to if relates_to is not None else (call.message_id or "uuid:none")
    if call.operation == "invoke":
        value = rng.choice((0, 0, 21, 50, -1, 2**31, 2**64)) if hostile else rng.choice((0, 0, 0, 21, 50))
        return render_invoke_response(relates, CLASS_URI, "RefreshPkgSource", value)
    return render_get_response(relates, _instance(rng, hostile=hostile))


def _envelope(call: WsmanCall, body: str, *, action: str = ACTION_GET_RESPONSE) -> str:
    relates = escape(call.message_id or "uuid:none")
    return (
        f'<s:Envelope xmlns:s="{NS_S}" xmlns:a="{NS_A}"><s:Header><a:Action>{action}</a:Action>'
        f"<a:MessageID>uuid:{uuid.uuid4()}</a:MessageID><a:RelatesTo>{relates}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def _status(rng: random.Random) -> int:
    return rng.choice((200, 500))


def _dtd_after_comment(call: WsmanCall, rng: random.Random) -> Reply:
    # e4 expands to 1 KB x 16^4 = 64 MB; the text names it 1, 2 or 4 times (64-256 MB).
    fan_out, levels = 16, 4
    repeats = rng.choice((1, 2, 4))
    expansion = 1024 * fan_out**levels * repeats
    # expat stops an expansion whose output exceeds 100x its input once past 8 MiB of output:
    # a comment of 1/50 of the expansion keeps the ratio at half that limit.
    comment = expansion // 50
    entities = ['<!ENTITY e0 "' + "A" * 1024 + '">']
    for level in range(1, levels + 1):
        entities.append(f'<!ENTITY e{level} "' + f"&e{level - 1};" * fan_out + '">')
    head = f'<?xml version="1.0"?>\n<!--{"c" * comment}-->\n<!DOCTYPE s:Envelope [{"".join(entities)}]>\n'
    text = f"&e{levels};" * repeats
    body = _envelope(call, f"<s:Fault><s:Reason><s:Text>{text}</s:Text></s:Reason></s:Fault>")
    return Reply(_status(rng), SOAP_XML, [head.encode(), body.encode()])


def _dtd_utf16(call: WsmanCall, rng: random.Random) -> Reply:
    entities = (
        '<!ENTITY e0 "'
        + "B" * 1024
        + '">'
        + "".join(f'<!ENTITY e{level} "' + f"&e{level - 1};" * 10 + '">' for level in range(1, 5))
    )
    text = f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE s:Envelope [{entities}]>' + _envelope(
        call, "<s:Fault><s:Reason><s:Text>&e4;</s:Text></s:Reason></s:Fault>"
    )
    return Reply(_status(rng), SOAP_UTF16, [text.encode("utf-16")])


def _repeated(call: WsmanCall, rng: random.Random, inner: Iterator[bytes]) -> Reply:
    text = _envelope(call, "\x00")
    head, tail = text.split("\x00")

    def chunks() -> Iterator[bytes]:
        yield head.encode()
        yield from inner
        yield tail.encode()

    return Reply(_status(rng), SOAP_XML, chunks())


def _nested(call: WsmanCall, rng: random.Random) -> Reply:
    per_chunk = CHUNK // 3

    def inner() -> Iterator[bytes]:
        for opening in (b"<a>", b"</a>"):
            left = NESTED_DEPTH
            while left:
                step = min(per_chunk, left)
                yield opening * step
                left -= step

    return _repeated(call, rng, inner())


def _siblings(call: WsmanCall, rng: random.Random) -> Reply:
    per_chunk = CHUNK // 4

    def inner() -> Iterator[bytes]:
        left = SIBLINGS
        while left:
            step = min(per_chunk, left)
            yield b"<a/>" * step
            left -= step

    return _repeated(call, rng, inner())


def _garbage_code(rng: random.Random) -> str:
    return rng.choice(
        (
            "abc",
            "-1",
            "99999999999999999999999",
            "0x80338029",
            "",
            " 2150858793 ",
            "2150858793.5",
            "١٢٣",
            "1e10",
            "&#0;",
        )
    )


def _fault_random_codes(call: WsmanCall, rng: random.Random) -> Reply:
    subcode = rng.choice(("w:TimedOut", "w:QuotaLimit", "w:InternalError", "x:Nope", "", "w:" + "A" * 300))
    reason = "".join(
        chr(rng.choice((0x41, 0x202E, 0x1B, 0xFFFD, 0x10FFFF, 0x3C0))) for _ in range(rng.randrange(1, 60))
    )
    detail = (
        f'<f:WSManFault xmlns:f="{NS_F}" Code="{escape(_garbage_code(rng))}" Machine="hx">'
        f'<f:Message><f:ProviderFault><w:ExtendedError><p:MSFT_WmiError xmlns:p="{NS_WMI}">'
        f"<p:error_Code>{escape(_garbage_code(rng))}</p:error_Code></p:MSFT_WmiError></w:ExtendedError>"
        f"</f:ProviderFault></f:Message></f:WSManFault>"
    )
    fault = (
        f'<s:Fault xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Code><s:Value>s:Receiver</s:Value>'
        f"<s:Subcode><s:Value>{escape(subcode)}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text></s:Reason>'
        f"<s:Detail>{detail}</s:Detail></s:Fault>"
    )
    text = _envelope(call, fault, action="http://schemas.dmtf.org/wbem/wsman/1/wsman/fault")
    if rng.random() < 0.4:
        return Reply(500, SOAP_UTF16, [('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16")])
    return Reply(500, SOAP_XML, [text.encode("utf-8", errors="surrogatepass")])


def _fault_utf16(call: WsmanCall, rng: random.Random) -> Reply:
    fault = (
        "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError</s:Value></s:Subcode>"
        '</s:Code><s:Reason><s:Text xml:lang="en-US">Le fournisseur a échoué ✓</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault xmlns:f="{NS_F}" Code="2147749889" Machine="hx"/></s:Detail></s:Fault>'
    )
    text = _envelope(call, fault, action="http://schemas.dmtf.org/wbem/wsman/1/wsman/fault")
    encoding = rng.choice(("utf-16", "utf-16-le", "utf-16-be"))
    declaration = '<?xml version="1.0" encoding="UTF-16"?>' if rng.random() < 0.7 else ""
    return Reply(500, rng.choice((SOAP_UTF16, SOAP_XML, "text/xml")), [(declaration + text).encode(encoding)])


def _truncated(call: WsmanCall, rng: random.Random) -> Reply:
    body = _valid_body(call, rng)
    return Reply(_status(rng), SOAP_XML, [body[: rng.randrange(len(body))]])


def _wrong_relates_to(call: WsmanCall, rng: random.Random) -> Reply:
    choice = rng.randrange(3)
    if choice == 0:
        body = _valid_body(call, rng, relates_to=f"uuid:{uuid.UUID(int=rng.getrandbits(128)).hex.upper()}")
    else:
        body = _valid_body(call, rng)
        relates = f"<a:RelatesTo>{escape(call.message_id or '')}</a:RelatesTo>".encode()
        body = body.replace(relates, b"" if choice == 1 else relates * 2)
    return Reply(200, SOAP_XML, [body])


def _random_bytes(call: WsmanCall, rng: random.Random) -> Reply:
    data = rng.randbytes(rng.randrange(4096))
    status = rng.choice((200, 500, 400, 401, 403, 404, 413, 502, 503))
    content_type = rng.choice((SOAP_XML, SOAP_UTF16, "text/html", "application/octet-stream", "multipart/encrypted"))
    return Reply(status, content_type, [data])


def _html_error(call: WsmanCall, rng: random.Random) -> Reply:
    status = rng.choice((500, 503, 502))
    page = (
        f"<!DOCTYPE HTML PUBLIC><HTML><HEAD><TITLE>Error</TITLE></HEAD><BODY><h2>HTTP Error {status}</h2></BODY></HTML>"
    )
    return Reply(status, "text/html; charset=us-ascii", [page.encode()])


def _oversize(call: WsmanCall, rng: random.Random) -> Reply:
    body = _valid_body(call, rng)
    cut = body.rindex(b"</s:Header>")
    padding = b"<!--" + b"p" * OVERSIZE_BYTES + b"-->"
    return Reply(200, SOAP_XML, [body[:cut], padding, body[cut:]])


def _valid(call: WsmanCall, rng: random.Random) -> Reply:
    return Reply(200, SOAP_XML, [_valid_body(call, rng)])


def _hostile_values(call: WsmanCall, rng: random.Random) -> Reply:
    return Reply(200, SOAP_XML, [_valid_body(call, rng, hostile=True)])


_BUILDERS: Final = {
    "valid": _valid,
    "hostile_values": _hostile_values,
    "dtd_after_comment": _dtd_after_comment,
    "dtd_utf16": _dtd_utf16,
    "nested": _nested,
    "siblings": _siblings,
    "fault_random_codes": _fault_random_codes,
    "fault_utf16": _fault_utf16,
    "truncated": _truncated,
    "wrong_relates_to": _wrong_relates_to,
    "random_bytes": _random_bytes,
    "html_error": _html_error,
    "oversize": _oversize,
}
assert set(_BUILDERS) == set(KINDS), "every kind needs a builder"


def reply_for(kind: str, rng: random.Random, call: WsmanCall) -> Reply:
    return _BUILDERS[kind](call, rng)
