"""The served OpenAPI document: FastAPI's, plus the rules the shared models check in code.

`RefreshItem` and `BulkCriteria` validate site codes, PackageIDs, classes and ids with
functions (worker/domain/packages.py, worker/domain/request.py, worker/domain/criteria.py); JSON Schema cannot see
those, so the document adds the same rules as patterns, `minItems` and `if`/`then` (a task
sequence needs `force`; `verify` never comes with `until: accepted`; `redistribute_failed` needs
`until: distributed`), on body fields and on path,
query and header parameters alike (tests/unit/test_api_openapi.py checks that each pattern
accepts exactly what its validator accepts), and the configured package limit as `maxItems`.
schemathesis runs every check over the served document (tests/integration/test_api_schemathesis.py).
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from worker.domain.ids import BULK_ID_HEX_DIGITS, BULK_ID_PREFIX
from worker.domain.packages import PACKAGE_CLASSES, REFUSED_CLASSES, TASK_SEQUENCE_CLASS

__all__ = [
    "BULK_ID_PATTERN",
    "CLASS_PATTERN",
    "IDEMPOTENCY_KEY_PATTERN",
    "ID_PATTERN",
    "LOCAL_ID_PATTERN",
    "NAME_PATTERN_PATTERN",
    "PACKAGE_ID_PATTERN",
    "SITE_CODE_PATTERN",
    "STREAM_ID_PATTERN",
    "install_openapi",
]

SITE_CODE_PATTERN: Final = "^[A-Za-z0-9]{3}$"
PACKAGE_ID_PATTERN: Final = "^[A-Za-z0-9]{3}[0-9A-Fa-f]{5}$"
ID_PATTERN: Final = "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}$"
# A caller's own request id: its token name and a colon go in front (api/request_ids.py).
LOCAL_ID_PATTERN: Final = "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,62}$"
# Bulk ids are minted by the producers: "bulk-" and 32 lowercase hex digits (worker/domain/ids.py).
BULK_ID_PATTERN: Final = f"^{re.escape(BULK_ID_PREFIX)}[0-9a-f]{{{BULK_ID_HEX_DIGITS}}}$"
IDEMPOTENCY_KEY_PATTERN: Final = "^[\\x21-\\x7e]{1,255}$"
# A name pattern's characters: the Basic Multilingual Plane but control, surrogate and private
# use characters and U+FFFE/U+FFFF (worker/domain/criteria.py refuses those; the API also refuses
# characters past U+FFFF, api/models.py).
NAME_PATTERN_PATTERN: Final = "^[\\x20-\\x7e\\xa0-\\ud7ff\\uf900-\\ufffd]{1,256}$"


def _case_insensitive(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


def _at_most(limit: int) -> str:
    """A regex for the decimal numbers 0..limit (leading zeros allowed, as Redis reads them)."""
    digits = str(limit)
    options = [f"[0-9]{{1,{len(digits) - 1}}}"]
    for i, digit in enumerate(digits):
        if digit != "0":
            options.append(f"{digits[:i]}[0-{int(digit) - 1}][0-9]{{{len(digits) - i - 1}}}")
    options.append(digits)
    return "(?:" + "|".join(options) + ")"


# A Redis stream id: two parts, each within 64 bits (api/events.py).
STREAM_ID_PATTERN: Final = f"^{_at_most(2**64 - 1)}-{_at_most(2**64 - 1)}$"
# Class names are matched case-insensitively; the description lists the canonical spellings of
# those a request may name (a refused class, SMS_ContentPackage, is a 422 whatever its spelling).
_CLASSES: Final = [name for name in PACKAGE_CLASSES if name not in REFUSED_CLASSES]
CLASS_PATTERN: Final = "^(?:" + "|".join(_case_insensitive(name) for name in _CLASSES) + ")$"
_TASK_SEQUENCE_PATTERN: Final = f"^{_case_insensitive(TASK_SEQUENCE_CLASS)}$"
_CLASS_RULE: Final = {"pattern": CLASS_PATTERN, "description": "one of " + ", ".join(_CLASSES)}

_FIELD_RULES: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "RefreshItem": {
        "site_code": {"pattern": SITE_CODE_PATTERN},
        "package_id": {"pattern": PACKAGE_ID_PATTERN},
        "package_class": _CLASS_RULE,
        "request_id": {"pattern": LOCAL_ID_PATTERN},
        "correlation_id": {"pattern": ID_PATTERN},
    },
    "BulkRefreshBody": {
        "site_code": {"pattern": SITE_CODE_PATTERN},
        "name_pattern": {"pattern": NAME_PATTERN_PATTERN},
        "package_ids": {"minItems": 1, "items": {"type": "string", "pattern": PACKAGE_ID_PATTERN}},
        "exclude_package_ids": {"items": {"type": "string", "pattern": PACKAGE_ID_PATTERN}},
        "package_classes": {"minItems": 1, "items": {"type": "string", **_CLASS_RULE}},
        "pkg_source_flags": {"minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": 4}},
    },
}
# Whole-object rules: a task sequence needs `force: true`; `verify: true` is `until: source_updated`
# (worker/domain/request.py: check_verify_until), so it cannot come with `until: accepted`;
# `redistribute_failed: true` needs `until: distributed`.
_FORCE_TRUE: Final = {"properties": {"force": {"const": True}}, "required": ["force"]}
_OBJECT_RULES: Final[dict[str, dict[str, Any]]] = {
    "RefreshItem": {
        "allOf": [
            {
                "if": {
                    "properties": {"package_class": {"pattern": _TASK_SEQUENCE_PATTERN}},
                    "required": ["package_class"],
                },
                "then": _FORCE_TRUE,
            },
            {
                "if": {"properties": {"verify": {"const": True}}, "required": ["verify"]},
                "then": {"properties": {"until": {"not": {"const": "accepted"}}}},
            },
            {
                # check_redistribute_until: redistribution happens only while following to every DP.
                "if": {"properties": {"redistribute_failed": {"const": True}}, "required": ["redistribute_failed"]},
                "then": {"properties": {"until": {"const": "distributed"}}, "required": ["until"]},
            },
        ]
    },
    "BulkRefreshBody": {
        "if": {
            "properties": {"package_classes": {"type": "array", "contains": {"pattern": _TASK_SEQUENCE_PATTERN}}},
            "required": ["package_classes"],
        },
        "then": _FORCE_TRUE,
    },
}
# Parameters by (where, name): the same rules the routes check in code.
_PARAMETER_RULES: Final[dict[tuple[str, str], dict[str, Any]]] = {
    ("path", "request_id"): {"pattern": ID_PATTERN},
    ("path", "site_code"): {"pattern": SITE_CODE_PATTERN},
    ("path", "package_id"): {"pattern": PACKAGE_ID_PATTERN},
    ("path", "bulk_id"): {"pattern": BULK_ID_PATTERN},
    ("query", "request_id"): {"pattern": ID_PATTERN},
    ("query", "correlation_id"): {"pattern": ID_PATTERN},
    ("query", "site_code"): {"pattern": SITE_CODE_PATTERN},
    ("query", "after"): {"pattern": STREAM_ID_PATTERN},
    ("header", "Last-Event-ID"): {"pattern": STREAM_ID_PATTERN},
    ("header", "Idempotency-Key"): {"pattern": IDEMPOTENCY_KEY_PATTERN},
}
_EVENTS_PATH: Final = "/v1/events"


def install_openapi(app: FastAPI, *, max_packages: int) -> None:
    """Serve the document built once, with the rules above merged in."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                openapi_version=app.openapi_version,
            )
            _merge_rules(schema, max_packages=max_packages)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise


def _merge_rules(schema: dict[str, Any], *, max_packages: int) -> None:
    components = schema.get("components", {}).get("schemas", {})
    for model, fields in _FIELD_RULES.items():
        properties = components.get(model, {}).get("properties", {})
        for name, rules in fields.items():
            if name in properties:
                _merge_field(properties[name], rules)
    for model, rules in _OBJECT_RULES.items():
        if model in components:
            components[model].update(rules)
    batch = components.get("RefreshBatch", {}).get("properties", {}).get("packages")
    if batch is not None:
        batch["maxItems"] = max_packages
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                rule = _PARAMETER_RULES.get((parameter.get("in", ""), parameter.get("name", "")))
                if rule is not None:
                    _merge_field(parameter["schema"], rule)
            if path == _EVENTS_PATH:
                _errors_as_json(operation)


def _errors_as_json(operation: dict[str, Any]) -> None:
    """The event stream's errors are JSON problems (FastAPI files them under the route's text/event-stream)."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content", {})
        if status != "200" and "text/event-stream" in content:
            content["application/json"] = content.pop("text/event-stream")


def _merge_field(prop: dict[str, Any], rules: dict[str, Any]) -> None:
    # Optional fields are `anyOf: [{type: string}, {type: null}]`: the rule goes on the string.
    targets = [option for option in prop.get("anyOf", []) if option.get("type") != "null"] or [prop]
    for target in targets:
        for key, value in rules.items():
            if key == "items" and isinstance(target.get("items"), dict):
                target["items"].update(value)
            else:
                target[key] = value
