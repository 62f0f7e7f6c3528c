"""Server-Sent Events framing, filters, stream ids and the stream cap (pure parts of api/events.py)."""

from __future__ import annotations

import json

import pytest

from api.events import (
    EventFilter,
    StreamLease,
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
    assert EventFilter(request_ids=frozenset({"r1", "me:r1"}), site_code="PS1", correlation_id="c1").matches(
        fields(site="ps1")
    )
    assert not EventFilter(request_ids=frozenset({"r2"})).matches(fields())
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
    """try_acquire refuses at the limit; a release frees one slot; a lease releases once however often asked."""
    slots = StreamSlots(2, per_caller=2, replays=1)
    first, second = slots.try_acquire("a"), slots.try_acquire("b")
    assert isinstance(first, StreamLease) and isinstance(second, StreamLease)
    assert slots.try_acquire("c") == "full"
    for _ in range(5):
        first.release()
    assert slots.open == 1 and isinstance(slots.try_acquire("c"), StreamLease)


def test_one_caller_gets_its_share_of_the_slots_and_no_more() -> None:
    """Past max_event_streams_per_caller a caller is refused while others still get slots."""
    slots = StreamSlots(10, per_caller=2, replays=1)
    held = [slots.try_acquire("reader"), slots.try_acquire("reader")]
    assert slots.try_acquire("reader") == "caller_full"
    assert isinstance(slots.try_acquire("other"), StreamLease)
    lease = held[0]
    assert isinstance(lease, StreamLease)
    lease.release()
    assert isinstance(slots.try_acquire("reader"), StreamLease)


def test_replay_permits_are_capped_and_returned_once_caught_up_or_released() -> None:
    """One replay permit: a second replaying lease is refused until the first catches up or ends."""
    slots = StreamSlots(10, per_caller=10, replays=1)
    first, second = slots.try_acquire("a"), slots.try_acquire("b")
    assert isinstance(first, StreamLease) and isinstance(second, StreamLease)
    assert first.start_replay() and not second.start_replay()
    first.end_replay()
    assert second.start_replay()
    second.release()
    second.end_replay()
    assert first.start_replay()


def test_stream_id_parts_must_fit_in_64_bits() -> None:
    """2**64 - 1 is the largest part Redis takes; one more is not a stream id."""
    top = str(2**64 - 1)
    assert is_stream_id(f"{top}-{top}")
    for bad in (f"{2**64}-0", f"0-{2**64}", "99999999999999999999-0"):
        assert not is_stream_id(bad)
