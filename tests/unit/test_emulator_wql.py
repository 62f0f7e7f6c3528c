"""The emulator's WQL subset: parsing, name resolution and evaluation against instances."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.sms.wql import And, Comparison, IsNull, Like, Not, Or, Query, Value, WqlError, parse, resolve
from emulator.sms.wql_eval import evaluate

PROPERTIES = ("PackageID", "Name", "PkgSourceFlag", "SourceVersion", "SourceDate", "Description", "Enabled")
INSTANCE: dict[str, Value] = {
    "PackageID": "PS100012",
    "Name": "Dell Latitude 7440 Drivers A05",
    "PkgSourceFlag": 3,
    "SourceVersion": 7,
    "SourceDate": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    "Description": None,
    "Enabled": True,
}


def matches(condition: str, instance: dict[str, Value] = INSTANCE) -> bool:
    text = "SELECT * FROM SMS_Package WHERE " + condition  # noqa: S608 - WQL under test, not SQL
    query = resolve(parse(text), "SMS_Package", PROPERTIES)
    return evaluate(query.where, instance)


def test_select_star_parses_to_a_query_without_projection() -> None:
    """`SELECT * FROM C` selects every property of the class and has no condition."""
    assert parse("SELECT * FROM SMS_DriverPackage") == Query("SMS_DriverPackage", None, None)


def test_select_list_keeps_the_named_properties_in_order() -> None:
    """A property list is kept in the order written."""
    assert parse("select Name, PackageID from SMS_Package").properties == ("Name", "PackageID")


def test_keywords_are_case_insensitive() -> None:
    """Keywords may be written in any case."""
    assert parse("sElEcT * FrOm SMS_Package wHeRe PkgSourceFlag = 3").where == Comparison("PkgSourceFlag", "=", 3)


def test_resolve_maps_identifiers_to_canonical_names_ignoring_case() -> None:
    """Property names in the select list and the condition are case-insensitive."""
    query = resolve(parse("SELECT name FROM x WHERE pkgsourceflag = 3"), "SMS_Package", PROPERTIES)
    assert query.properties == ("Name",)
    assert query.where == Comparison("PkgSourceFlag", "=", 3)
    assert query.class_name == "SMS_Package"


def test_resolve_rejects_an_unknown_property() -> None:
    """A property the class does not have is an invalid query."""
    with pytest.raises(WqlError) as caught:
        resolve(parse("SELECT Nope FROM SMS_Package"), "SMS_Package", PROPERTIES)
    assert caught.value.kind == "unknown_property"


def test_and_binds_tighter_than_or() -> None:
    """`a OR b AND c` groups as `a OR (b AND c)`."""
    where = parse("SELECT * FROM C WHERE A = 1 OR B = 2 AND C = 3").where
    assert where == Or((Comparison("A", "=", 1), And((Comparison("B", "=", 2), Comparison("C", "=", 3)))))


def test_parentheses_and_not_group_conditions() -> None:
    """Parentheses override precedence and NOT applies to the following term."""
    where = parse("SELECT * FROM C WHERE NOT (A = 1 OR B = 2)").where
    assert where == Not(Or((Comparison("A", "=", 1), Comparison("B", "=", 2))))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("PkgSourceFlag = 3", True),
        ("PkgSourceFlag <> 3", False),
        ("PkgSourceFlag != 2", True),
        ("SourceVersion < 8", True),
        ("SourceVersion > 7", False),
        ("SourceVersion <= 7", True),
        ("SourceVersion >= 8", False),
        ("8 > SourceVersion", True),
        ("PkgSourceFlag = 0x3", True),
        ("SourceVersion > -1", True),
        ("PackageID = 'ps100012'", True),
        ('PackageID = "PS100013"', False),
        ("Name < 'E'", True),
        ("Enabled = TRUE", True),
        ("Enabled = FALSE", False),
    ],
)
def test_comparison_operators_follow_wql(condition: str, expected: bool) -> None:
    """Each comparison operator compares like WMI, strings without regard to case."""
    assert matches(condition) is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("'dell%'", True),
        ("'%A05'", True),
        ("'%7440%'", True),
        ("'Dell Latitude 744_ Drivers A05'", True),
        ("'Dell Latitude 744 Drivers A05'", False),
        ("'[cd]ell%'", True),
        ("'[^d]ell%'", False),
        ("'HP%'", False),
    ],
)
def test_like_supports_percent_underscore_and_sets_ignoring_case(pattern: str, expected: bool) -> None:
    """LIKE matches the whole value with %, _ and [set] wildcards, case-insensitively."""
    assert matches(f"Name LIKE {pattern}") is expected


def test_not_like_negates_the_match() -> None:
    """`NOT LIKE` is the negation of LIKE."""
    assert parse("SELECT * FROM C WHERE Name NOT LIKE 'a%'").where == Like("Name", "a%", negated=True)
    assert matches("Name NOT LIKE 'HP%'")


def test_string_literals_accept_backslash_escapes() -> None:
    """Backslash escapes a quote or a backslash inside either kind of quotes."""
    text = r"SELECT * FROM C WHERE Path = '\\\\fs01\\it\'s' OR Name = " + r'"say \"hi\""'  # noqa: S608 - WQL
    where = parse(text).where
    assert where == Or((Comparison("Path", "=", r"\\fs01\it's"), Comparison("Name", "=", 'say "hi"')))


def test_is_null_and_is_not_null_test_for_missing_values() -> None:
    """IS [NOT] NULL tests a null property; `= NULL` and `<> NULL` mean the same."""
    assert matches("Description IS NULL")
    assert not matches("Description IS NOT NULL")
    assert parse("SELECT * FROM C WHERE Description = NULL").where == IsNull("Description")
    assert parse("SELECT * FROM C WHERE Description <> NULL").where == IsNull("Description", negated=True)


def test_a_comparison_with_a_null_property_is_false() -> None:
    """Comparing a null property is false whatever the operator, as in WQL."""
    assert not matches("Description = 'x'")
    assert not matches("Description <> 'x'")
    assert not matches("Description LIKE '%'")


def test_datetime_properties_compare_with_dmtf_or_iso_constants() -> None:
    """A datetime property compares with a DMTF or ISO 8601 string constant."""
    assert matches("SourceDate > '20261101000000.000000+000'")
    assert matches("SourceDate = '2026-11-23T10:00:00Z'")
    assert not matches("SourceDate < 'not a date'")


def test_an_integer_property_compares_with_a_numeric_string() -> None:
    """A numeric string constant is converted to the integer property's type."""
    assert matches("PkgSourceFlag = '3'")
    assert not matches("PkgSourceFlag = 'three'")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SELECT",
        "SELECT * FROM",
        "SELECT FROM C",
        "SELECT * C",
        "SELECT *, Name FROM C",
        "SELECT * FROM C WHERE",
        "SELECT * FROM C WHERE A =",
        "SELECT * FROM C WHERE A = 'unterminated",
        "SELECT * FROM C WHERE (A = 1",
        "SELECT * FROM C WHERE A = 1)",
        "SELECT * FROM C WHERE A = B",
        "SELECT * FROM C WHERE 1 = 2",
        "SELECT * FROM C WHERE A > NULL",
        "SELECT * FROM C WHERE A LIKE 3",
        "SELECT * FROM C WHERE A IS 3",
        "SELECT * FROM C WHERE A = 1 AND",
        "SELECT * FROM C WHERE A ~ 1",
        "SELECT * FROM C extra",
        "DELETE FROM C",
    ],
)
def test_syntax_errors_raise_wql_error(text: str) -> None:
    """Malformed queries raise WqlError of kind "syntax" (WBEM_E_INVALID_QUERY)."""
    with pytest.raises(WqlError) as caught:
        parse(text)
    assert caught.value.kind == "syntax"


def test_deep_nesting_is_refused_rather_than_overflowing_the_stack() -> None:
    """Pathological nesting is a syntax error, not a RecursionError."""
    with pytest.raises(WqlError):
        parse("SELECT * FROM C WHERE " + "NOT " * 5000 + "A = 1")


@given(st.text(max_size=200))
def test_parse_raises_nothing_but_wql_error(text: str) -> None:
    """Any text either parses or raises WqlError."""
    try:
        query = parse(text)
    except WqlError as exc:
        assert exc.kind == "syntax"
    else:
        assert isinstance(query, Query)


@given(st.text(alphabet="%_[]^abcAB\\", max_size=12), st.text(alphabet="abcAB[]^%_", max_size=12))
def test_like_never_fails_on_odd_patterns(pattern: str, value: str) -> None:
    """Any LIKE pattern compiles and evaluates to a boolean."""
    result = evaluate(Like("Name", pattern), {"Name": value})
    assert isinstance(result, bool)
