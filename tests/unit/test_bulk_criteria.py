"""Bulk criteria (worker.domain.criteria) and the WQL condition helpers: strict input, bounded, injection-free WQL.

The produced WQL is parsed and evaluated with the emulator's own WQL engine: what reaches the
SMS Provider is checked as a parse tree, not as a string.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.sms.wql import And, Comparison, Expr, Like, Or, parse, resolve
from emulator.sms.wql_eval import evaluate
from errors import InvalidRequestError
from worker.domain.criteria import (
    DEFAULT_PACKAGE_CLASSES,
    ENUMERATION_PROPERTIES,
    EXPLICIT_ONLY_CLASSES,
    MAX_IDS_PER_QUERY,
    MAX_PACKAGE_IDS,
    MAX_QUERY_CHARS,
    BulkCriteria,
    ClassQuery,
    parse_criteria,
    queries,
)
from worker.domain.packages import PACKAGE_CLASSES, REFUSED_CLASSES, TASK_SEQUENCE_CLASS
from worker.domain.wql import WqlCondition, equals_any, like_condition, select_query, wildcard_to_like

# Characters that mean something to WQL strings, WMI's LIKE or our wildcards, plus ordinary ones.
SPECIAL = "%_[]^*?'\"\\;-=() "
NAME_ALPHABET = st.sampled_from(list(SPECIAL + "abAB19éÉßΩ"))
PATTERN_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Co"), exclude_characters="\ufffe\uffff")


def criteria(**fields: Any) -> BulkCriteria:
    return parse_criteria({"site_code": "PS1", **fields})


def where_of(query: ClassQuery) -> Expr | None:
    parsed = resolve(parse(query.wql), query.class_name, ENUMERATION_PROPERTIES)
    assert parsed.class_name == query.class_name
    assert parsed.properties == ENUMERATION_PROPERTIES
    return parsed.where


def wildcard_matches(pattern: str, name: str) -> bool:
    """The meaning of a `*`/`?` pattern, independently of WQL: the test's oracle."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE | re.DOTALL) is not None


def test_defaults_select_only_plain_and_driver_packages() -> None:
    """Without classes, only SMS_Package and SMS_DriverPackage are queried, unfiltered."""
    result = list(queries(criteria()))
    assert [q.class_name for q in result] == list(DEFAULT_PACKAGE_CLASSES) == ["SMS_Package", "SMS_DriverPackage"]
    assert all(where_of(q) is None for q in result)


def test_every_class_is_default_explicit_only_or_refused_and_nothing_else() -> None:
    """The three groups split the allow-list: boot images, OS images and the like are never a default."""
    groups = (set(DEFAULT_PACKAGE_CLASSES), set(EXPLICIT_ONLY_CLASSES), set(REFUSED_CLASSES))
    assert set().union(*groups) == set(PACKAGE_CLASSES)
    assert sum(len(group) for group in groups) == len(PACKAGE_CLASSES)
    assert {
        "SMS_BootImagePackage",
        "SMS_ImagePackage",
        "SMS_OperatingSystemInstallPackage",
        "SMS_SoftwareUpdatesPackage",
        TASK_SEQUENCE_CLASS,
    } <= set(EXPLICIT_ONLY_CLASSES)


@pytest.mark.parametrize(
    "named",
    ["SMS_BootImagePackage", "sms_imagepackage", "SMS_OperatingSystemInstallPackage", "SMS_SoftwareUpdatesPackage"],
)
def test_a_heavy_class_is_selected_when_named_explicitly(named: str) -> None:
    """Naming a class the default leaves out selects that class, and only it."""
    chosen = criteria(package_classes=[named])
    assert [q.class_name.lower() for q in queries(chosen)] == [named.lower()]


def test_application_content_is_refused_with_the_reason_alone_or_among_other_classes() -> None:
    """SMS_ContentPackage: one error that says why (deployment type, not the console's action, unverifiable)."""
    for classes in (["SMS_ContentPackage"], ["SMS_Package", "sms_contentpackage"]):
        with pytest.raises(InvalidRequestError) as raised:
            criteria(package_classes=classes)
        message = raised.value.message
        assert "SMS_ContentPackage" in message and "deployment type" in message
        assert "console" in message and "verified" in message


def test_force_allows_naming_task_sequences_but_never_adds_them_by_default() -> None:
    """SMS_TaskSequencePackage needs force=true and an explicit mention."""
    with pytest.raises(InvalidRequestError, match="force=true"):
        criteria(package_classes=["sms_tasksequencepackage"])
    forced = criteria(package_classes=["sms_tasksequencepackage"], force=True)
    assert forced.classes == (TASK_SEQUENCE_CLASS,)
    assert TASK_SEQUENCE_CLASS not in criteria(force=True).classes


def test_values_are_normalised_and_deduplicated() -> None:
    """Site, classes and ids are canonicalised; repeats are dropped; flags sorted."""
    result = criteria(
        site_code="ps1",
        package_classes=["sms_package", "SMS_Package", "sms_driverpackage"],
        pkg_source_flags=[3, 2, 3],
        package_ids=["ps100001", "PS100001", "ps10000a"],
    )
    assert result.site_code == "PS1"
    assert result.classes == ("SMS_Package", "SMS_DriverPackage")
    assert result.pkg_source_flags == [2, 3]
    assert result.package_ids == ["PS100001", "PS10000A"]


def test_a_where_clause_holds_exactly_the_requested_comparisons() -> None:
    """Flags, name pattern and ids become an AND of three groups, nothing else."""
    query = next(
        queries(
            criteria(
                package_classes=["SMS_DriverPackage"],
                pkg_source_flags=[2, 3],
                name_pattern="Dell *",
                package_ids=["PS100001", "PS100002"],
            )
        )
    )
    assert where_of(query) == And(
        (
            Or((Comparison("PkgSourceFlag", "=", 2), Comparison("PkgSourceFlag", "=", 3))),
            Like("Name", "Dell %"),
            Or((Comparison("PackageID", "=", "PS100001"), Comparison("PackageID", "=", "PS100002"))),
        )
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "' OR 1=1 --",
        "x' OR Name LIKE '%",
        "a\\' OR '1'='1",
        "\\",
        '"; DROP --',
        "100%_[done]^",
        "SELECT * FROM SMS_Package WHERE",
        "Pilote réseau Ω ß*",
    ],
)
def test_hostile_name_patterns_stay_one_like_condition(pattern: str) -> None:
    """Quotes, backslashes, LIKE metacharacters and WQL keywords end up inside the single LIKE literal."""
    query = next(queries(criteria(package_classes=["SMS_Package"], name_pattern=pattern)))
    where = where_of(query)
    assert isinstance(where, Like)
    assert (where.prop, where.negated) == ("Name", False)
    assert evaluate(where, {"Name": pattern.replace("*", "")})  # the pattern matches its own literal text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"site_code": "P'1"}, "site_code: invalid site code"),
        ({"site_code": "PS1" * 3400}, "site_code: invalid site code"),
        ({"package_classes": ["SMS_Package' OR 1=1"]}, "package_classes: invalid package class"),
        ({"package_classes": ["Win32_Process"]}, "package_classes: invalid package class"),
        ({"package_classes": []}, "package_classes: must name at least one class"),
        ({"package_classes": "SMS_Package"}, "package_classes: Input should be a valid list"),
        ({"name_pattern": ""}, "name_pattern: must be 1-256"),
        ({"name_pattern": "x" * 10_240}, "name_pattern: must be 1-256"),
        ({"name_pattern": "Dell\n*"}, "name_pattern: character 5 \\(U\\+000A\\)"),
        ({"name_pattern": "a\x00b"}, "name_pattern: character 2"),
        ({"name_pattern": "a\u0085b"}, "name_pattern: character 2"),
        ({"name_pattern": "a\ue000"}, "name_pattern: character 2"),
        ({"name_pattern": 42}, "name_pattern: Input should be a valid string"),
        ({"pkg_source_flags": [7]}, "pkg_source_flags: 7 is not a PkgSourceFlag value"),
        ({"pkg_source_flags": ["3"]}, "pkg_source_flags.0: Input should be a valid integer"),
        ({"pkg_source_flags": [True]}, "pkg_source_flags.0: Input should be a valid integer"),
        ({"pkg_source_flags": []}, "pkg_source_flags: must list at least one"),
        ({"package_ids": ["PS1' OR '1'='1"]}, "package_ids: invalid PackageID"),
        ({"package_ids": [f"PS1{i:05X}" for i in range(100_000)]}, "package_ids: List should have at most 50000"),
        ({"package_ids": []}, "package_ids: must list at least one"),
        ({"exclude_package_ids": ["nope"]}, "exclude_package_ids: invalid PackageID"),
        ({"force": "true"}, "force: Input should be a valid boolean"),
        ({"force": 1}, "force: Input should be a valid boolean"),
        ({"wql": "SELECT * FROM SMS_Package"}, "wql: unknown field"),
    ],
)
def test_bad_criteria_get_a_clear_error(fields: dict[str, Any], message: str) -> None:
    """Each bad field is named with its rule, without echoing more than a short repr of the value."""
    with pytest.raises(InvalidRequestError, match=message) as caught:
        criteria(**fields)
    assert len(str(caught.value)) < 600


def test_several_problems_are_reported_at_once_and_bounded() -> None:
    """Every bad field appears in one error; a flood of problems is cut to a few plus a count."""
    with pytest.raises(InvalidRequestError) as caught:
        parse_criteria({"site_code": "x", "force": "yes", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    text = str(caught.value)
    assert "site_code" in text and "force" in text
    assert "and 2 more" in text


def test_criteria_must_be_a_mapping() -> None:
    """A JSON array or string where an object belongs is refused."""
    with pytest.raises(InvalidRequestError, match="expected a JSON object"):
        parse_criteria(["PS1"])  # type: ignore[arg-type]  # deliberately wrong


def test_explicit_ids_are_chunked_into_bounded_queries() -> None:
    """50,000 ids become queries of at most 200 ids each, per class, each id exactly once, each query bounded."""
    ids = [f"PS1{i:05X}" for i in range(MAX_PACKAGE_IDS)]
    result = list(queries(criteria(package_classes=["SMS_Package", "SMS_DriverPackage"], package_ids=ids)))
    per_class = -(-MAX_PACKAGE_IDS // MAX_IDS_PER_QUERY)
    assert len(result) == 2 * per_class
    assert max(len(q.wql) for q in result) < MAX_QUERY_CHARS
    seen: list[str] = []
    for query in result[:per_class]:
        where = where_of(query)
        assert isinstance(where, Or)
        assert len(where.items) <= MAX_IDS_PER_QUERY
        for item in where.items:
            assert isinstance(item, Comparison)
            assert (item.prop, item.op) == ("PackageID", "=")
            seen.append(str(item.value))
    assert seen == ids


def test_excluded_ids_are_left_out_of_queries_and_reported_for_enumeration() -> None:
    """Excluded ids never reach an id query, and excludes() tells the enumerator what to skip."""
    result = criteria(package_ids=["PS100001", "PS100002"], exclude_package_ids=["ps100002", "PS100003"])
    texts = [q.wql for q in queries(result)]
    assert all("PS100002" not in text and "PS100001" in text for text in texts)
    assert result.excludes("ps100003") and result.excludes("PS100002")
    assert not result.excludes("PS100001")
    assert list(queries(criteria(package_ids=["PS100001"], exclude_package_ids=["PS100001"]))) == []


def test_the_longest_pattern_with_a_full_chunk_stays_bounded() -> None:
    """The worst case (256 characters that all need escaping, every flag, 200 ids) fits in MAX_QUERY_CHARS."""
    worst = criteria(
        name_pattern="[" * 256,
        pkg_source_flags=[0, 1, 2, 3, 4],
        package_ids=[f"PS1{i:05X}" for i in range(MAX_IDS_PER_QUERY)],
        package_classes=["SMS_OperatingSystemInstallPackage"],
    )
    (query,) = queries(worst)
    assert len(query.wql) < MAX_QUERY_CHARS
    assert isinstance(where_of(query), And)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=st.text(NAME_ALPHABET, min_size=1, max_size=10),
    names=st.lists(st.text(NAME_ALPHABET, max_size=12), max_size=12),
)
def test_like_matches_exactly_what_the_wildcard_pattern_means(pattern: str, names: list[str]) -> None:
    """For any pattern and names, the emulator's WQL engine matches a name iff the wildcard pattern does."""
    query = next(queries(criteria(package_classes=["SMS_Package"], name_pattern=pattern)))
    where = where_of(query)
    assert isinstance(where, Like) and where.prop == "Name" and not where.negated
    candidates = [*names, pattern, pattern.replace("*", "").replace("?", "x")]
    for name in candidates:
        assert evaluate(where, {"Name": name}) == wildcard_matches(pattern, name), (pattern, name)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=st.one_of(st.none(), st.text(PATTERN_CHARS, min_size=1, max_size=256)),
    flags=st.one_of(st.none(), st.lists(st.integers(0, 4), min_size=1, max_size=5)),
    ids=st.one_of(st.none(), st.lists(st.integers(0, 0xFFFFF), min_size=1, max_size=450)),
    classes=st.lists(st.sampled_from(DEFAULT_PACKAGE_CLASSES), min_size=1, max_size=3),
)
def test_no_input_reaches_the_wql_outside_its_literal(
    pattern: str | None, flags: list[int] | None, ids: list[int] | None, classes: list[str]
) -> None:
    """Whatever valid criteria hold, every query parses to exactly the intended conditions with the intended values."""
    fields: dict[str, Any] = {"package_classes": classes}
    if pattern is not None:
        fields["name_pattern"] = pattern
    if flags is not None:
        fields["pkg_source_flags"] = flags
    package_ids = None if ids is None else list(dict.fromkeys(f"PS1{i:05X}" for i in ids))
    if package_ids is not None:
        fields["package_ids"] = package_ids
    result = list(queries(criteria(**fields)))
    seen_ids: dict[str, list[str]] = {}
    for query in result:
        assert len(query.wql) < MAX_QUERY_CHARS
        where = where_of(query)
        groups = list(where.items) if isinstance(where, And) else ([] if where is None else [where])
        if flags is not None:
            flag_group = groups.pop(0)
            expected = tuple(Comparison("PkgSourceFlag", "=", f) for f in sorted(set(flags)))
            assert flag_group == (Or(expected) if len(expected) > 1 else expected[0])
        if pattern is not None:
            assert groups.pop(0) == Like("Name", wildcard_to_like(pattern))
        if package_ids is not None:
            id_group = groups.pop(0)
            items = id_group.items if isinstance(id_group, Or) else (id_group,)
            assert all(isinstance(i, Comparison) and (i.prop, i.op) == ("PackageID", "=") for i in items)
            seen_ids.setdefault(query.class_name, []).extend(str(i.value) for i in items if isinstance(i, Comparison))
        assert groups == []
    assert sorted({q.class_name for q in result}) == sorted(set(classes))
    if package_ids is not None:
        assert all(found == package_ids for found in seen_ids.values())


# -- the WQL helpers themselves ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wildcard", "like"),
    [("Dell *", "Dell %"), ("a?c", "a_c"), ("50%", "50[%]"), ("a_b", "a[_]b"), ("[x]", "[[]x]"), ("^]", "^]")],
)
def test_wildcards_become_like_patterns_with_metacharacters_made_literal(wildcard: str, like: str) -> None:
    """`*`/`?` become `%`/`_`; a literal `%`, `_` or `[` is wrapped in a one-character set."""
    assert wildcard_to_like(wildcard) == like


def test_condition_helpers_escape_values_and_refuse_bad_parts() -> None:
    """Literals are escaped, integers written as numbers, bad property names and values refused."""
    assert like_condition("Name", "it's").text == "Name LIKE 'it\\'s'"
    assert equals_any("PkgSourceFlag", [2, 3]).text == "(PkgSourceFlag = 2 OR PkgSourceFlag = 3)"
    with pytest.raises(InvalidRequestError):
        like_condition("Name; DROP", "x")
    with pytest.raises(InvalidRequestError):
        equals_any("PkgSourceFlag", [])
    with pytest.raises(InvalidRequestError):
        equals_any("PkgSourceFlag", [True])
    with pytest.raises(InvalidRequestError):
        like_condition("Name", "a\x00")


def test_select_query_accepts_only_helper_made_conditions() -> None:
    """A plain string smuggled in as a condition is refused; helper-made ones are ANDed."""
    with pytest.raises(InvalidRequestError, match="helpers"):
        select_query("SMS_Package", None, ["1=1"])  # type: ignore[list-item]  # deliberately wrong
    text = select_query("sms_package", ["PackageID"], [WqlCondition("A = 1"), like_condition("Name", "x")])
    assert text == "SELECT PackageID FROM SMS_Package WHERE A = 1 AND Name LIKE 'x'"
