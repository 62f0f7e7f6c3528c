"""The served OpenAPI document: rules agree with the validators, every error is declared.

Also the small pure helpers behind routes: idempotency fingerprints and derived ids, and the
worker count of /readyz.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from api.app import create_app
from api.events import is_stream_id
from api.idempotency import Claim, fingerprint, is_valid_key
from api.models import (
    LOCAL_ID_MAX_CHARS,
    BulkRefreshBody,
    DistributionBlock,
    DistributionRow,
    OutcomeDocument,
    Redistribution,
)
from api.openapi import (
    BULK_ID_PATTERN,
    CLASS_PATTERN,
    ID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    LOCAL_ID_PATTERN,
    NAME_PATTERN_PATTERN,
    PACKAGE_ID_PATTERN,
    SITE_CODE_PATTERN,
    STREAM_ID_PATTERN,
)
from api.readiness import count_consumers
from config.settings import ApiSettings, Settings
from errors import InvalidRequestError
from worker.domain.ids import is_bulk_id
from worker.domain.packages import validate_package_class, validate_package_id, validate_site_code
from worker.domain.request import is_valid_id

OUTCOME_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "outcome.schema.json"


def document(**api: Any) -> dict[str, Any]:
    settings = Settings(api=ApiSettings(**api))
    result: dict[str, Any] = create_app(settings, tokens=None).openapi()
    return result


def accepts(validate: Any, value: str) -> bool:
    try:
        validate(value)
    except InvalidRequestError:
        return False
    return True


def full(pattern: str) -> re.Pattern[str]:
    # JSON Schema's `$` is the end of the text (ECMA-262); Python's would also allow a final "\n".
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


def _name_pattern_ok(value: str) -> bool:
    try:
        BulkRefreshBody.model_validate({"site_code": "PS1", "name_pattern": value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("pattern", "check"),
    [
        (SITE_CODE_PATTERN, lambda v: accepts(validate_site_code, v)),
        (PACKAGE_ID_PATTERN, lambda v: accepts(validate_package_id, v)),
        (ID_PATTERN, is_valid_id),
        (LOCAL_ID_PATTERN, lambda v: is_valid_id(v) and len(v) <= LOCAL_ID_MAX_CHARS),
        (BULK_ID_PATTERN, is_bulk_id),
        (STREAM_ID_PATTERN, is_stream_id),
        (IDEMPOTENCY_KEY_PATTERN, is_valid_key),
        (CLASS_PATTERN, lambda v: accepts(validate_package_class, v)),
        (NAME_PATTERN_PATTERN, _name_pattern_ok),
    ],
    ids=["site_code", "package_id", "id", "local_id", "bulk_id", "stream_id", "idempotency_key", "class", "name"],
)
@given(data=st.data())
def test_each_published_pattern_accepts_exactly_what_its_validator_accepts(pattern: str, check: Any, data: Any) -> None:
    """Strings drawn from the pattern pass the validator; any string passes both or neither."""
    compiled = full(pattern)
    drawn = data.draw(st.from_regex(compiled, fullmatch=True))
    assert check(drawn)
    other = data.draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=12))
    assert bool(compiled.fullmatch(other)) == check(other)


def test_stream_id_pattern_stops_exactly_at_64_bits() -> None:
    """The largest 64-bit parts match; one more in either part does not."""
    compiled = full(STREAM_ID_PATTERN)
    top = 2**64 - 1
    assert compiled.fullmatch(f"{top}-{top}") and compiled.fullmatch("0-0")
    assert not compiled.fullmatch(f"{top + 1}-0") and not compiled.fullmatch(f"0-{top + 1}")


def test_the_outcome_model_has_exactly_the_documented_fields() -> None:
    """OutcomeDocument mirrors docs/outcome.schema.json: same properties, all required, same version."""
    documented = json.loads(OUTCOME_SCHEMA.read_text(encoding="utf-8"))
    schema = OutcomeDocument.model_json_schema(by_alias=True)
    assert set(schema["properties"]) == set(documented["properties"])
    assert set(schema["required"]) == set(documented["required"])
    assert schema["properties"]["version"]["const"] == documented["properties"]["version"]["const"]


def test_the_distribution_models_have_exactly_the_documented_fields() -> None:
    """DistributionBlock, DistributionRow and Redistribution mirror the schema's `distribution`,
    `distributionRow` and `redistribution` (the block's optional `redistributed` is required in neither)."""
    documented = json.loads(OUTCOME_SCHEMA.read_text(encoding="utf-8"))["$defs"]
    for model, name in (
        (DistributionBlock, "distribution"),
        (DistributionRow, "distributionRow"),
        (Redistribution, "redistribution"),
    ):
        schema = model.model_json_schema()
        assert set(schema["properties"]) == set(documented[name]["properties"]), name
        assert set(schema["required"]) == set(documented[name]["required"]), name
    counts = DistributionBlock.model_json_schema()["$defs"]["DistributionCounts"]
    assert set(counts["required"]) == set(documented["distribution"]["properties"]["counts"]["required"])


def test_every_v1_operation_declares_its_token_and_its_errors() -> None:
    """Bearer security, 401/403/422/500/503 on every /v1 operation; 409 and 413 on every POST."""
    doc = document()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert {p for p, _, _ in operations} >= {
        "/v1/refreshes",
        "/v1/refreshes/{request_id}",
        "/v1/refreshes/{request_id}/distribution",
        "/v1/sites/{site_code}/packages/{package_id}",
        "/v1/bulk-refreshes",
        "/v1/bulk-refreshes/{bulk_id}",
        "/v1/bulk-refreshes/{bulk_id}/cancel",
        "/v1/bulk-refreshes/{bulk_id}/stragglers",
        "/v1/events",
        "/healthz",
        "/readyz",
    }
    for path, method, operation in operations:
        if path == "/metrics":
            assert operation["security"] == [{"bearer": []}]
            assert {"401", "403", "500", "503"} <= set(operation["responses"])
            continue
        if not path.startswith("/v1/"):
            assert "security" not in operation
            continue
        assert operation["security"] == [{"bearer": []}], path
        expected = {"401", "403", "422", "500", "503"} | ({"409", "413"} if method == "post" else set())
        assert expected <= set(operation["responses"]), (method, path)
        for status, response in operation["responses"].items():
            assert response.get("content"), (method, path, status)


def test_the_package_limit_and_field_rules_are_published() -> None:
    """maxItems is the configured api.max_packages_per_request; ids and codes carry their patterns."""
    doc = document(max_packages_per_request=7)
    schemas = doc["components"]["schemas"]
    assert schemas["RefreshBatch"]["properties"]["packages"]["maxItems"] == 7
    request = schemas["RefreshItem"]["properties"]
    assert request["site_code"]["pattern"] == SITE_CODE_PATTERN
    assert request["package_id"]["pattern"] == PACKAGE_ID_PATTERN
    assert re.fullmatch(request["package_class"]["pattern"].strip("^$"), "sms_PACKAGE")
    assert any(option.get("pattern") == LOCAL_ID_PATTERN for option in request["request_id"]["anyOf"])
    assert not {"package_hint", "requested_at", "retry_state"} & set(request)


def test_fingerprints_ignore_key_order_and_spacing_but_not_values() -> None:
    """The same body in another key order fingerprints the same; another value or route does not."""
    a = fingerprint("/v1/refreshes", {"packages": [{"site_code": "PS1", "package_id": "PS100001"}]})
    b = fingerprint("/v1/refreshes", {"packages": [{"package_id": "PS100001", "site_code": "PS1"}]})
    assert a == b
    assert a != fingerprint("/v1/refreshes", {"packages": [{"site_code": "PS1", "package_id": "PS100002"}]})
    assert a != fingerprint("/v1/bulk-refreshes", {"packages": [{"site_code": "PS1", "package_id": "PS100001"}]})


def test_derived_ids_are_stable_per_key_and_index_and_valid_request_ids() -> None:
    """A retried keyed POST derives the same ids; other items and keys derive others."""
    claim = Claim("k", "scope-digest", "{}")
    same = Claim("k2", "scope-digest", "{}")
    ids = [claim.derived_id("req", i) for i in range(3)]
    assert ids == [same.derived_id("req", i) for i in range(3)]
    assert len(set(ids)) == 3 and all(is_valid_id(i) for i in ids)
    assert Claim("k", "other", "{}").derived_id("req", 0) != ids[0]
    assert is_valid_key("0b7c4a8e-4d1f-4c4e-9c1e-8a3b2f1d0e9c") and not is_valid_key("has space")
    assert not is_valid_key("") and not is_valid_key("k" * 256)


def test_readiness_counts_the_workers_consuming_our_queue() -> None:
    """Workers answering active_queues() count only when one of their queues is ours."""
    reply = {
        "w1@h": [{"name": "ours"}, {"name": "other"}],
        "w2@h": [{"name": "other"}],
        "w3@h": [{"name": "ours"}],
        "w4@h": "garbage",
    }
    assert count_consumers(reply, "ours") == 2
    assert count_consumers(None, "ours") == 0 and count_consumers({}, "ours") == 0
