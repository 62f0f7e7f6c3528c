"""Hostile task messages: seeded generators and hypothesis strategies (pure: nothing is sent here).

What a careless or hostile producer can put in `sccm.refresh_package` messages:

* any JSON value under known and unknown kwarg names (hypothesis: `json_kwargs()`, drawn through a
  seeded `@given` wrapper so one seed is one list of examples);
* lone surrogates ("c\\udc80") in every string field and in key names; control characters, ANSI
  escapes and U+202E; path-like and `${jndi:...}` ids;
* ids of 64-200 characters, and pairs that share their first 64 characters;
* huge values (1 MB strings, 100,000-element lists) and dicts nested ~1000 deep under an extra key;
* reserved names (`self`, `args`, `kwargs`, `task_id`, `request_id` as an object) and forged
  `retry_state` (NaN, huge, negative, far-future values) on otherwise valid requests;
* wrong types for every field (`force: "yes"`, `force: 1`, `verify: "true"`, `site_code: 123` ...);
* a request rejected first and resent fixed under the same request id (phase 2: sent after the
  first one's final is in);
* bulk-looking ids: correlation ids with a bulk id's shape, words a sloppy producer sends ("PS1",
  "null", "NaN") and a real bulk's id, on valid requests and next to an invalid PackageID; request
  ids shaped like a bulk's child (`<bulk id>:<PackageID>`) that no bulk lists. Each is an
  ordinary request: one final, a refresh only when valid;
* raw bodies a non-Python producer could publish: not a list, kwargs as a list or a string,
  positional args, invalid JSON, bytes that are not UTF-8, a foreign content type, a 5000-digit
  integer, nesting past the decoder's recursion limit, and protocol headers cut to `task` + `id`.

Each case says whether the contract accepts it (`valid`): only a valid request may refresh its
package, and must do so exactly once. Everything else must end with one final outcome (rejected,
failed) and no provider call.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from chaos.workload import RawBody, valid_kwargs

__all__ = [
    "HostileCase",
    "PackageSource",
    "fixed_cases",
    "hypothesis_cases",
    "hypothesis_examples",
    "json_kwargs",
]

KNOWN_NAMES: Final = (
    "site_code",
    "package_id",
    "package_class",
    "request_id",
    "correlation_id",
    "force",
    "verify",
    "requested_at",
    "retry_state",
)
RESERVED_NAMES: Final = ("self", "args", "kwargs", "task_id", "request_id", "retries", "id", "eta")
STRING_FIELDS: Final = ("site_code", "package_id", "package_class", "request_id", "correlation_id", "requested_at")
ONE_MB: Final = 1024 * 1024
LONG_LIST: Final = 100_000
DEEP: Final = 1000
ID_ALPHABET: Final = string.ascii_letters + string.digits + "_.:-"
PREFIX_CHARS: Final = 64
EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

# Something that hands out catalogue packages: (task_sequence wanted?) -> package summary.
PackageSource = Callable[[bool], dict[str, Any]]


@dataclass(frozen=True)
class HostileCase:
    label: str
    kwargs: dict[str, Any] | None = None
    raw: RawBody | None = None
    valid: bool = False
    package_id: str | None = None  # the package it would refresh (valid, or a coercion target)
    phase: int = 1  # 2: sent once phase 1's finals are in (the fixed resend of a rejected request)
    tags: frozenset[str] = field(default_factory=frozenset)


# -- hypothesis: any JSON under any name ---------------------------------------------------------


def _text() -> st.SearchStrategy[str]:
    everything = st.text(st.characters(exclude_categories=()), max_size=24)
    # Surrogates, controls, format characters (U+202E ...) and line separators, on purpose.
    nasty = st.text(st.characters(categories=("Cs", "Cc", "Cf", "Zl", "Zp")), min_size=1, max_size=8)
    return everything | nasty


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text()
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(_text(), children, max_size=4),
        max_leaves=12,
    )


def json_kwargs() -> st.SearchStrategy[dict[str, Any]]:
    """Task kwargs: known, reserved and arbitrary names, each with any JSON value."""
    names = st.sampled_from(KNOWN_NAMES + RESERVED_NAMES) | _text()
    return st.dictionaries(names, json_values(), max_size=8)


def hypothesis_examples(strategy: st.SearchStrategy[Any], count: int, *, seed_value: int) -> list[Any]:
    """`count` examples of `strategy`, the same ones for the same seed (a seeded @given, run once)."""
    examples: list[Any] = []
    if count <= 0:
        return examples

    @seed(seed_value)
    @settings(
        max_examples=count,
        phases=(Phase.generate,),
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        examples.append(value)

    collect()
    return examples[:count]


# -- seeded generators ---------------------------------------------------------------------------


class _Builder:
    def __init__(self, take: PackageSource, rng: random.Random, bulk_id: str | None) -> None:
        self.take = take
        self.rng = rng
        self.bulk_id = bulk_id
        self.cases: list[HostileCase] = []
        self._ids = 0

    def request_id(self) -> str:
        self._ids += 1
        return f"chaos-hostile-{self._ids}-{self.rng.getrandbits(48):012x}"

    def base(self, *, task_sequence: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        package = self.take(task_sequence)
        return valid_kwargs(package, request_id=self.request_id()), package

    def add(self, label: str, kwargs: dict[str, Any], **extra: Any) -> None:
        self.cases.append(HostileCase(label, kwargs=kwargs, **extra))

    def add_raw(self, label: str, body: bytes, **extra: Any) -> None:
        raw = RawBody(body, extra.pop("content_type", "application/json"), extra.pop("minimal_headers", False))
        self.cases.append(HostileCase(label, raw=raw, **extra))

    def valid(self, label: str, kwargs: dict[str, Any], package: dict[str, Any], **extra: Any) -> None:
        self.add(label, kwargs, valid=True, package_id=package["PackageID"], **extra)

    def random_id(self, length: int) -> str:
        first = self.rng.choice(string.ascii_letters + string.digits)
        return first + "".join(self.rng.choice(ID_ALPHABET) for _ in range(length - 1))


def _middle(value: str, insert: str) -> str:
    """`insert` in the middle of `value` (the edges would be stripped as whitespace by some)."""
    half = max(1, len(value) // 2)
    return value[:half] + insert + value[half:]


def _surrogates(b: _Builder) -> None:
    for name, insert in zip(
        STRING_FIELDS, ("\udc80", "\ud800", "\udfff", "\udc80", "\udbff", "\udc00\ud800"), strict=True
    ):
        kwargs, _ = b.base()
        kwargs[name] = _middle(str(kwargs.get(name) or "c"), insert)
        b.add(f"surrogate in {name}", kwargs)
    kwargs, _ = b.base()
    kwargs["c\udc80"] = 1
    b.add("surrogate in a key name", kwargs)
    kwargs, _ = b.base()
    kwargs["correlation_id"] = "c\udc80"
    b.add("surrogate in correlation_id", kwargs)


def _controls(b: _Builder) -> None:
    inserts = ("\x1b[2J\x1b[31m", "\u202e", "\x00", "\x07\x08", "\x7f", "\u2028", "\ufeff", "\r\n\t")
    for index, insert in enumerate(inserts):
        name = STRING_FIELDS[index % len(STRING_FIELDS)]
        kwargs, _ = b.base()
        kwargs[name] = _middle(str(kwargs.get(name) or "corr"), insert)
        b.add(f"control characters in {name}", kwargs)


def _paths(b: _Builder) -> None:
    hostile = (
        ("package_id", "../../../../etc/passwd"),
        ("package_id", "..\\..\\Windows\\win.ini"),
        ("package_id", 'PS100012" OR PackageID LIKE "%'),
        ("request_id", "${jndi:ldap://127.0.0.1:1389/a}"),
        ("request_id", "../../../x"),
        ("correlation_id", "${${lower:j}ndi:dns://127.0.0.1/x}"),
        ("package_class", "SMS_Package/../../root/cimv2:Win32_Process"),
        ("site_code", "..\\"),
        ("package_id", "\\\\?\\GLOBALROOT\\Device\\HarddiskVolume1"),
        ("request_id", "%2e%2e%2f%2e%2e%2f"),
    )
    for name, value in hostile:
        kwargs, _ = b.base()
        kwargs[name] = value
        b.add(f"path-like or jndi {name}", kwargs)


def _long_ids(b: _Builder) -> None:
    for length in (64, 100, 128):  # within the contract: valid, each must refresh
        kwargs, package = b.base()
        kwargs["request_id"] = b.random_id(length)
        b.valid(f"request_id of {length} chars", kwargs, package)
    for length in (129, 200):
        kwargs, _ = b.base()
        kwargs["request_id"] = b.random_id(length)
        b.add(f"request_id of {length} chars", kwargs)
    prefix = b.random_id(PREFIX_CHARS)
    pairs = (
        ("valid pair sharing a 64-char prefix", 100, "", True),
        ("too-long pair sharing a 64-char prefix", 180, "", False),
        ("bad-character pair sharing a 64-char prefix", 90, "/", False),
    )
    for label, length, bad, valid in pairs:
        for suffix_char in "ab":
            kwargs, package = b.base()
            kwargs["request_id"] = prefix + bad + suffix_char * (length - PREFIX_CHARS - len(bad))
            if valid:
                b.valid(label, kwargs, package)
            else:
                b.add(label, kwargs)
    kwargs, _ = b.base()
    kwargs["correlation_id"] = b.random_id(200)
    b.add("correlation_id of 200 chars", kwargs)


def _bulk_ids(b: _Builder) -> None:
    shaped = f"bulk-{b.rng.getrandbits(128):032x}"
    names = {
        "bulk-shaped": shaped,
        "bulk-shaped, upper case": shaped.upper(),
        "PS1": "PS1",
        "null": "null",
        "NaN": "NaN",
    }
    if b.bulk_id is not None:
        names["a real bulk's id"] = b.bulk_id
    for label, name in names.items():
        kwargs, package = b.base()
        kwargs["correlation_id"] = name
        b.valid(f"correlation_id {label}", kwargs, package)
        kwargs, _ = b.base()
        kwargs.update(correlation_id=name, package_id="not-a-package")  # the rejection a bulk once counted
        b.add(f"invalid package_id, correlation_id {label}", kwargs)
    for label, bulk_id in (("bulk-shaped", shaped), ("a real bulk's", b.bulk_id)):
        if bulk_id is None:
            continue
        kwargs, package = b.base()
        kwargs.update(request_id=f"{bulk_id}:{str(package['PackageID']).upper()}", correlation_id=bulk_id)
        b.valid(f"request_id shaped like a child of {label} id", kwargs, package)
        kwargs, package = b.base()
        child_id = f"{bulk_id}:{str(package['PackageID']).upper()}"
        kwargs.update(request_id=child_id, correlation_id=bulk_id, site_code="ZZ9")
        b.add(f"request_id shaped like a child of {label} id, unconfigured site", kwargs)


def _huge(b: _Builder) -> None:
    kwargs, _ = b.base()
    kwargs["package_id"] = "P" * ONE_MB
    b.add("1 MB package_id", kwargs)
    kwargs, _ = b.base()
    kwargs["note"] = "x" * ONE_MB
    b.add("1 MB unknown kwarg", kwargs)
    kwargs, _ = b.base()
    kwargs["request_id"] = b.random_id(ONE_MB)
    b.add("1 MB request_id", kwargs)
    kwargs, _ = b.base()
    kwargs["correlation_id"] = list(range(LONG_LIST))
    b.add("100k-element list", kwargs)
    kwargs, _ = b.base()
    kwargs["site_code"] = ["PS1"] * LONG_LIST
    b.add("100k-element site_code", kwargs)


def _nested_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _deep(b: _Builder) -> None:
    kwargs, _ = b.base()
    nested: Any = 1
    for _ in range(200):
        nested = {"a": nested}
    kwargs["extra"] = nested
    b.add("dict nested 200 deep", kwargs)
    for depth in (DEEP - 10, DEEP, 5 * DEEP):
        kwargs, _ = b.base()
        text = json.dumps(kwargs)[:-1] + f', "extra": {_nested_json(depth)}}}'
        b.add_raw(f"dict nested {depth} deep (raw)", f"[[], {text}, {json.dumps(EMBED)}]".encode())


def _reserved(b: _Builder) -> None:
    for name, value in (
        ("self", "x"),
        ("args", [1, 2]),
        ("kwargs", {"site_code": "PS1"}),
        ("task_id", "x"),
        ("retries", 99),
    ):
        kwargs, _ = b.base()
        kwargs[name] = value
        b.add(f"reserved name {name}", kwargs)
    kwargs, _ = b.base()
    kwargs["request_id"] = {"$ne": None}
    b.add("request_id as an object", kwargs)
    forged: tuple[tuple[str, Any], ...] = (
        ("NaN attempts", {"attempts": math.nan}),
        ("huge attempts", {"attempts": 10**30, "medium_retries": 10**12}),
        ("negative counters", {"attempts": -5, "transient_retries": -1}),
        ("far-future not_before", {"not_before": 4.0e9}),
        ("NaN not_before", {"not_before": math.nan}),
        ("infinite not_before", {"not_before": math.inf}),
        ("far-future first attempt", {"first_attempt_at": 4.0e9, "requested_at": -1.0}),
        ("huge source version", {"source_version_before": 2**40}),
        ("retry_state as a string", "attempts=3"),
        ("retry_state as a list", [1, 2, 3]),
        ("1 MB package name", {"package_name": "n" * ONE_MB}),
    )
    for label, state in forged:  # the state is discarded: the request itself is valid
        kwargs, package = b.base()
        kwargs["retry_state"] = state
        b.valid(f"forged retry_state: {label}", kwargs, package)


def _wrong_types(b: _Builder) -> None:
    for value in ("yes", 1, "true", "1", 1.0, "on"):  # coercion would refresh a task sequence
        kwargs, package = b.base(task_sequence=True)
        kwargs["force"] = value
        b.add(f"force={value!r} on a task sequence", kwargs, package_id=package["PackageID"], tags=frozenset({"force"}))
    wrong: tuple[tuple[str, Any], ...] = (
        ("verify", "true"),
        ("verify", 1),
        ("verify", "yes"),
        ("force", "no"),
        ("site_code", 123),
        ("site_code", ["PS1"]),
        ("site_code", None),
        ("site_code", True),
        ("package_id", 100012),
        ("package_id", {"id": "PS100012"}),
        ("package_class", 3),
        ("package_class", None),
        ("request_id", 12345),
        ("correlation_id", 1.5),
        ("requested_at", 1_700_000_000),
        ("requested_at", "yesterday"),
        ("requested_at", "2026-01-01T00:00:00"),
    )
    for name, value in wrong:
        kwargs, package = b.base()
        kwargs[name] = value
        b.add(f"{name}={value!r}", kwargs, package_id=package["PackageID"])


def _rejected_then_fixed(b: _Builder) -> None:
    breakages: tuple[tuple[str, bool, Callable[[dict[str, Any]], None]], ...] = (
        ("unknown class", False, lambda kw: kw.update(package_class="SMS_NoSuchPackage")),
        ("unconfigured site", False, lambda kw: kw.update(site_code="ZZ9", package_id="ZZ900012")),
        ("task sequence without force", True, lambda kw: kw.pop("force")),
    )
    for label, task_sequence, breakage in breakages:
        fixed, package = b.base(task_sequence=task_sequence)
        broken = dict(fixed)
        breakage(broken)
        b.add(f"rejected first ({label})", broken)
        b.valid(f"resent fixed ({label})", fixed, package, phase=2)


def _raw(b: _Builder) -> None:
    embed = json.dumps(EMBED)
    kwargs, package = b.base()
    b.add_raw(
        "raw: valid body (control)",
        f"[[], {json.dumps(kwargs)}, {embed}]".encode(),
        valid=True,
        package_id=package["PackageID"],
    )
    kwargs, package = b.base()
    b.add_raw(
        "raw: valid body, headers task+id only",
        f"[[], {json.dumps(kwargs)}, {embed}]".encode(),
        minimal_headers=True,
        valid=True,
        package_id=package["PackageID"],
    )
    kwargs, _ = b.base()
    valid_text = json.dumps(kwargs)
    bodies: tuple[tuple[str, bytes, str], ...] = (
        ("raw: body is an object", valid_text.encode(), "application/json"),
        ("raw: body is a string", b'"refresh PS100012 please"', "application/json"),
        ("raw: body is a number", b"42", "application/json"),
        ("raw: body is null", b"null", "application/json"),
        ("raw: body is an empty list", b"[]", "application/json"),
        ("raw: two-element body", f"[[], {valid_text}]".encode(), "application/json"),
        ("raw: kwargs as a list", f'[[], ["PS1", "PS100012"], {embed}]'.encode(), "application/json"),
        ("raw: kwargs as a string", f'[[], "site_code=PS1", {embed}]'.encode(), "application/json"),
        ("raw: positional args", f'[["PS1", "PS100012"], {valid_text}, {embed}]'.encode(), "application/json"),
        ("raw: embed is a string", f'[[], {valid_text}, "chain"]'.encode(), "application/json"),
        ("raw: invalid JSON", b'[[], {"site_code": "PS1", ', "application/json"),
        ("raw: not UTF-8", b'[[], {"site_code": "\xff\xfe\xfd"}, {}]', "application/json"),
        ("raw: empty body", b"", "application/json"),
        (
            "raw: 5000-digit integer",
            f'[[], {valid_text[:-1]}, "n": 1{"0" * 5000}}}, {embed}]'.encode(),
            "application/json",
        ),
        ("raw: pickle content type", f"[[], {valid_text}, {embed}]".encode(), "application/x-python-serialize"),
        ("raw: text/plain content type", f"[[], {valid_text}, {embed}]".encode(), "text/plain"),
        ("raw: yaml content type", b"- []\n- {site_code: PS1}\n- {}\n", "application/x-yaml"),
    )
    for label, body, content_type in bodies:
        b.add_raw(label, body, content_type=content_type)


def fixed_cases(take: PackageSource, rng: random.Random, *, bulk_id: str | None = None) -> list[HostileCase]:
    """Every hand-written hostile case, once (about 130 messages, 8 of them 1 MB or more).

    `bulk_id`: a bulk that exists, for the cases naming a real bulk.
    """
    builder = _Builder(take, rng, bulk_id)
    for family in (
        _surrogates,
        _controls,
        _paths,
        _long_ids,
        _bulk_ids,
        _huge,
        _deep,
        _reserved,
        _wrong_types,
        _rejected_then_fixed,
        _raw,
    ):
        family(builder)
    return builder.cases


def hypothesis_cases(count: int, *, seed_value: int) -> Iterator[HostileCase]:
    """`count` messages of arbitrary JSON kwargs (never valid: no draw names a configured package)."""
    for kwargs in hypothesis_examples(json_kwargs(), count, seed_value=seed_value):
        yield HostileCase("any JSON (hypothesis)", kwargs=kwargs)
