"""Unit tests of the ConfigMgr input rules (worker.domain.packages) and WQL building (worker.domain.wql)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import InvalidRequestError
from worker.domain.packages import (
    PACKAGE_CLASSES,
    TASK_SEQUENCE_CLASS,
    package_resource_uri,
    safe_repr,
    site_enumeration_uri,
    validate_package_class,
    validate_package_id,
    validate_site_code,
)
from worker.domain.wql import package_query, wql_string_literal


@pytest.mark.parametrize(("raw", "expected"), [("ps1", "PS1"), ("ABC", "ABC"), ("a1Z", "A1Z")])
def test_site_codes_are_normalised_to_upper_case(raw: str, expected: str) -> None:
    """Three letters or digits are accepted and upper-cased."""
    assert validate_site_code(raw) == expected


@pytest.mark.parametrize("raw", ["PS", "PS12", "P-1", "PS1 ", "", None, 123, "ÄBC"])
def test_bad_site_codes_are_refused(raw: object) -> None:
    """Wrong length, punctuation, whitespace and non-strings raise InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="invalid site code"):
        validate_site_code(raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("ps10000f", "PS10000F"), ("P010000F", "P010000F"), ("CAS00A1b", "CAS00A1B")]
)
def test_package_ids_are_normalised_to_upper_case(raw: str, expected: str) -> None:
    """A site code and five hex digits are accepted, from any site, upper-cased."""
    assert validate_package_id(raw) == expected


@pytest.mark.parametrize("raw", ["PS1", "PS10000G", "PS1000001", "PS1'OR'1", "PS1\x000000", " PS100001", None, 7])
def test_bad_package_ids_are_refused(raw: object) -> None:
    """Anything but <site><5 hex> raises InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="invalid PackageID"):
        validate_package_id(raw)


def test_package_classes_are_matched_case_insensitively_to_canonical_names() -> None:
    """Every allowed class is accepted in any case and returned in its canonical spelling."""
    for name in PACKAGE_CLASSES:
        assert validate_package_class(name.upper()) == name
    assert TASK_SEQUENCE_CLASS in PACKAGE_CLASSES


@pytest.mark.parametrize("raw", ["Win32_Process", "SMS_Package ", "SMS_Package/../x", "", None])
def test_classes_outside_the_allow_list_are_refused(raw: object) -> None:
    """Only the documented RefreshPkgSource classes are accepted."""
    with pytest.raises(InvalidRequestError, match="invalid package class"):
        validate_package_class(raw)


def test_error_messages_echo_bad_values_as_truncated_reprs() -> None:
    """A long hostile value is echoed as a repr cut to 64 characters."""
    hostile = "x\n" * 100

    with pytest.raises(InvalidRequestError) as caught:
        validate_site_code(hostile)

    echoed = safe_repr(hostile)
    assert len(echoed) == 64 and echoed.endswith("...")
    assert echoed in caught.value.message
    assert "\n" not in caught.value.message


def test_resource_uris_use_the_site_namespace_and_canonical_class() -> None:
    """package_resource_uri and site_enumeration_uri build the WMI plug-in URIs from validated parts."""
    base = "http://schemas.microsoft.com/wbem/wsman/1/wmi/root/sms/site_PS1"

    assert package_resource_uri("ps1", "sms_driverpackage") == f"{base}/SMS_DriverPackage"
    assert site_enumeration_uri("ps1") == f"{base}/*"
    with pytest.raises(InvalidRequestError):
        package_resource_uri("PS1", "Win32_Process")


@pytest.mark.parametrize(
    ("value", "literal"),
    [("PS100012", "'PS100012'"), ("O'Brien", "'O\\'Brien'"), ('a"b', "'a\\\"b'"), ("C:\\src\\", "'C:\\\\src\\\\'")],
)
def test_wql_literals_escape_quotes_and_backslashes(value: str, literal: str) -> None:
    """Quotes and backslashes are backslash-escaped inside a single-quoted literal."""
    assert wql_string_literal(value) == literal


@given(value=st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs"))))
def test_wql_literals_never_end_early(value: str) -> None:
    """Whatever the value, the literal's only unescaped quotes are its two delimiters."""
    literal = wql_string_literal(value)
    inner = literal[1:-1]
    unescaped_quotes = re.findall(r"(?<!\\)(?:\\\\)*['\"]", inner)

    assert literal[0] == literal[-1] == "'"
    assert unescaped_quotes == []


def test_wql_literals_refuse_control_characters() -> None:
    """Control characters never reach a WQL query."""
    with pytest.raises(InvalidRequestError):
        wql_string_literal("PS1\n00001")


def test_package_queries_are_built_from_validated_parts() -> None:
    """package_query normalises ids and class, and lists properties."""
    query = package_query("sms_package", ["ps100001", "PS100002"], properties=["PackageID", "SourceVersion"])

    assert query == (
        "SELECT PackageID, SourceVersion FROM SMS_Package WHERE PackageID = 'PS100001' OR PackageID = 'PS100002'"
    )
    assert package_query("SMS_Package") == "SELECT * FROM SMS_Package"
    with pytest.raises(InvalidRequestError):
        package_query("SMS_Package", ["PS1' OR '1'='1"])
    with pytest.raises(InvalidRequestError):
        package_query("SMS_Package", properties=["Name; DROP"])
    with pytest.raises(InvalidRequestError):
        package_query("SMS_Package", [])
