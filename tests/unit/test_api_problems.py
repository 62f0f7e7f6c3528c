"""Error bodies of the API: validation errors name fields and never echo what was sent."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from api.models import RefreshBatch
from api.problems import MAX_FIELD_ERRORS, sanitise_errors

HOSTILE = "<img src=x onerror=alert(1)>"


def errors_for(body: Any) -> list[dict[str, Any]]:
    try:
        RefreshBatch.model_validate(body)
    except ValidationError as exc:
        return sanitise_errors(exc.errors())
    raise AssertionError("expected a validation error")


def test_each_bad_field_is_named_and_no_value_is_echoed() -> None:
    """A bad site code, package id and class are named by location; the values sent appear nowhere."""
    shown = errors_for(
        {"packages": [{"site_code": HOSTILE, "package_id": f"PS1{HOSTILE}", "package_class": HOSTILE * 3}]}
    )
    assert {tuple(e["loc"]) for e in shown} == {
        ("packages", 0, "site_code"),
        ("packages", 0, "package_id"),
        ("packages", 0, "package_class"),
    }
    text = repr(shown)
    assert "onerror" not in text and "<img" not in text
    assert all(set(e) == {"loc", "msg", "type"} for e in shown)


def test_an_unknown_key_that_is_not_a_plain_name_is_shown_as_a_placeholder() -> None:
    """`{"${jndi:...}": 1}` is reported as an unknown field at `<key>`; a plain typo keeps its name."""
    shown = errors_for({"packages": [{"site_code": "PS1", "package_id": "PS100001", "${jndi:x}": 1, "verfy": True}]})
    assert sorted(tuple(e["loc"]) for e in shown) == [("packages", 0, "<key>"), ("packages", 0, "verfy")]
    assert {e["msg"] for e in shown} == {"unknown field"}


def test_json_types_are_not_coerced() -> None:
    """ "true" is not a boolean, 1 is not a string: each is a type error on its field."""
    shown = errors_for({"packages": [{"site_code": "PS1", "package_id": 100001, "verify": "true", "force": 1}]})
    assert {tuple(e["loc"]): e["type"] for e in shown} == {
        ("packages", 0, "package_id"): "string_type",
        ("packages", 0, "verify"): "bool_type",
        ("packages", 0, "force"): "bool_type",
    }


def test_many_errors_are_cut_to_a_bounded_list_with_a_count() -> None:
    """A thousand bad items: MAX_FIELD_ERRORS entries and one saying how many more."""
    shown = errors_for({"packages": [{"site_code": "bad!", "package_id": "PS100001"}] * 1000})
    assert len(shown) == MAX_FIELD_ERRORS + 1
    assert shown[-1]["type"] == "too_many_errors" and "980 more" in shown[-1]["msg"]
