"""The served OpenAPI document: FastAPI's, plus the rules the shared models check in code.

`RefreshItem` and `BulkCriteria` validate site codes, PackageIDs, classes and ids with
functions (worker/packages.py, worker/request.py); JSON Schema cannot see those, so the
document adds the same rules as patterns and enums (tests/unit/test_api_openapi.py checks
that pattern and validator agree) and the configured package limit as `maxItems`.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from worker.packages import PACKAGE_CLASSES

__all__ = ["ID_PATTERN", "LOCAL_ID_PATTERN", "PACKAGE_ID_PATTERN", "SITE_CODE_PATTERN", "install_openapi"]

SITE_CODE_PATTERN: Final = "^[A-Za-z0-9]{3}$"
PACKAGE_ID_PATTERN: Final = "^[A-Za-z0-9]{3}[0-9A-Fa-f]{5}$"
ID_PATTERN: Final = "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}$"
# A caller's own request id: its token name and a colon go in front (api/request_ids.py).
LOCAL_ID_PATTERN: Final = "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,62}$"
# Classes are matched case-insensitively; the document lists the canonical spellings.
_CLASSES: Final = list(PACKAGE_CLASSES)

_FIELD_RULES: Final[dict[str, dict[str, dict[str, Any]]]] = {
    "RefreshItem": {
        "site_code": {"pattern": SITE_CODE_PATTERN},
        "package_id": {"pattern": PACKAGE_ID_PATTERN},
        "package_class": {"enum": _CLASSES},
        "request_id": {"pattern": LOCAL_ID_PATTERN},
        "correlation_id": {"pattern": ID_PATTERN},
    },
    "BulkRefreshBody": {
        "site_code": {"pattern": SITE_CODE_PATTERN},
        "package_ids": {"items": {"type": "string", "pattern": PACKAGE_ID_PATTERN}},
        "exclude_package_ids": {"items": {"type": "string", "pattern": PACKAGE_ID_PATTERN}},
        "package_classes": {"items": {"type": "string", "enum": _CLASSES}},
        "pkg_source_flags": {"items": {"type": "integer", "minimum": 0, "maximum": 4}},
    },
}


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
    batch = components.get("RefreshBatch", {}).get("properties", {}).get("packages")
    if batch is not None:
        batch["maxItems"] = max_packages


def _merge_field(prop: dict[str, Any], rules: dict[str, Any]) -> None:
    # Optional fields are `anyOf: [{type: string}, {type: null}]`: the rule goes on the string.
    targets = [option for option in prop.get("anyOf", []) if option.get("type") != "null"] or [prop]
    for target in targets:
        for key, value in rules.items():
            if key == "items" and isinstance(target.get("items"), dict):
                target["items"].update(value)
            else:
                target[key] = value
