"""Server-Sent Events framing, filters, stream ids and the stream cap (pure parts of api/events.py)."""

from __future__ import annotations

import json

import pytest

from api.events import (
    EventFilter,
    StreamSlots,
    format_event,
    format_heartbeat,
    is_stream_id,
    stream_id_key,
)


def fields(
    request_id: str = "r1", site: str = "PS1", correlation: str | None = "c1", kind: str = "request"
) -> dict[str, str]:
    return {
        "outcome": json.dumps({"request_id": request_id, "correlation_id": correlation}),
        "request_id": request_id,
        "site_code": site,
        "kind": kind,
    }


def test_an_event_carries_its_stream_id_its_kind_and_one_data_line_per_line() -> None:
    """id, event and data fields, a blank line after; multi-line data becomes several data lines."""
    assert format_event("5-1", '{"a":1}') == b'id: 5-1\nevent: outcome\ndata: {"a":1}\n\n'
    assert format_event("5-2", "x\ny", "bulk") == b"id: 5-2\nevent: bulk\ndata: x\ndata: y\n\n"


def test_a_heartbeat_is_a_comment_that_moves_the_last_event_id() -> None:
    """No data (no event is dispatched), but the id sets where a reconnect resumes."""
    assert format_heartbeat("7-0") == b": heartbeat\nid: 7-0\n\n"


def test_stream_ids_compare_as_numbers_not_text() -> None:
    """10-0 comes after 9-0, and 5-10 after 5-9; anything else is not a stream id."""
    assert stream_id_key("10-0") > stream_id_key("9-0")
    assert stream_id_key("5-10") > stream_id_key("5-9")
    for bad in ("", "5", "5-", "-1", "a-b", "5-1 ", "1" * 21 + "-0", "$", "+"):
        assert not is_stream_id(bad)
        with pytest.raises(ValueError):
            stream_id_key(bad)


def test_filters_match_on_request_site_and_correlation() -> None:
    """Every given filter must match; site codes compare case-insensitively; no filter matches all."""
    assert EventFilter().matches(fields())
    assert EventFilter(request_id="r1", site_code="PS1", correlation_id="c1").matches(fields(site="ps1"))
    assert not EventFilter(request_id="r2").matches(fields())
    assert not EventFilter(site_code="BS1").matches(fields())
    assert not EventFilter(correlation_id="c2").matches(fields())
    assert not EventFilter(correlation_id="c1").matches(fields(correlation=None))
    assert not EventFilter(correlation_id="c1").matches({**fields(), "outcome": "not json"})


def test_a_bulk_outcome_matches_the_correlation_id_its_children_carry() -> None:
    """Following a bulk's children by correlation id (the bulk id) includes the bulk's own final."""
    bulk = fields(request_id="bulk-1", correlation=None, kind="bulk")
    assert EventFilter(correlation_id="bulk-1").matches(bulk)
    assert not EventFilter(correlation_id="bulk-2").matches(bulk)


def test_stream_slots_cap_concurrent_streams_and_free_on_release() -> None:
    """try_acquire fails at the limit; a release frees one slot; releases never go negative."""
    slots = StreamSlots(2)
    assert slots.try_acquire() and slots.try_acquire() and not slots.try_acquire()
    slots.release()
    assert slots.open == 1 and slots.try_acquire()
    for _ in range(5):
        slots.release()
    assert slots.open == 0
