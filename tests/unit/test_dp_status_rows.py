"""DP status rows from the provider (worker/domain/distribution.py): queries built safely, hostile
rows refused or bounded, never a traceback."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from errors import InvalidRequestError
from worker.domain.distribution import (
    MAX_PACKAGES_PER_QUERY,
    ContentCountsReader,
    DpMessageReader,
    DpState,
    DpStatusReader,
    content_counts_query,
    dp_name_from_nal,
    dp_status_query,
    merge_batches,
    package_chunks,
    unsettled_dp_status_query,
    validate_nal_path,
)
from worker.wsman import WmiInstance

_NAL = '["Display=\\\\DP01.corp.example\\"]MSWNET:["SMS_SITE=PS1"]\\\\DP01.corp.example\\'
_SUMMARIZER = "SMS_PackageStatusDistPointsSummarizer"


def _row(**overrides: str | list[str | None] | None) -> WmiInstance:
    properties: dict[str, str | list[str | None] | None] = {
        "PackageID": "PS100001",
        "ServerNALPath": _NAL,
        "SiteCode": "PS1",
        "SourceVersion": "4",
        "State": "0",
        "LastCopied": "2026-12-07T10:00:00Z",
    }
    properties.update(overrides)
    return WmiInstance(_SUMMARIZER, properties)


def _read(*instances: WmiInstance, requested: tuple[str, ...] = ("PS100001",), max_rows: int = 100) -> DpStatusReader:
    reader = DpStatusReader(requested, max_rows=max_rows)
    for instance in instances:
        if not reader.add(instance):
            break
    return reader


def test_a_nal_path_with_quotes_brackets_and_backslashes_names_its_server() -> None:
    assert dp_name_from_nal(_NAL) == "DP01.corp.example"
    assert validate_nal_path(_NAL) == _NAL
    assert dp_name_from_nal('["Display=\\\\DP02\\"]MSWNET:["SMS_SITE=PS1"]') == "DP02"


@pytest.mark.parametrize(
    "nal",
    ["", "x" * 600, _NAL + "\x00", "MSWNET:nothing", '["Display=\\\\<script>\\"]', 17, None],
    ids=["empty", "too-long", "nul", "no-server", "markup", "int", "none"],
)
def test_a_nal_path_that_names_no_server_or_cannot_travel_is_refused(nal: object) -> None:
    with pytest.raises(InvalidRequestError, match="invalid NAL path"):
        validate_nal_path(nal)


def test_the_query_escapes_nothing_it_does_not_validate_and_takes_at_most_200_ids() -> None:
    query = dp_status_query(["ps100001", "PS100002"])
    assert query == (
        "SELECT PackageID, ServerNALPath, SiteCode, SourceVersion, State, LastCopied "
        "FROM SMS_PackageStatusDistPointsSummarizer WHERE PackageID = 'PS100001' OR PackageID = 'PS100002'"
    )
    with pytest.raises(InvalidRequestError):
        dp_status_query([f"PS1{n:05X}" for n in range(MAX_PACKAGES_PER_QUERY + 1)])
    with pytest.raises(InvalidRequestError, match="invalid PackageID"):
        dp_status_query(["PS100001' OR 1=1 --"])


def test_the_unsettled_query_asks_only_for_rows_not_installed_at_each_packages_version() -> None:
    query = unsettled_dp_status_query({"ps100001": 5, "PS100002": 12})
    assert query.endswith(
        "WHERE (PackageID = 'PS100001' AND (State <> 0 OR SourceVersion < 5))"
        " OR (PackageID = 'PS100002' AND (State <> 0 OR SourceVersion < 12))"
    )
    for version in (0, -1, True, 2**32, "5", 1.5):
        with pytest.raises(InvalidRequestError, match="settled version"):
            unsettled_dp_status_query({"PS100001": version})  # type: ignore[dict-item]
    with pytest.raises(InvalidRequestError, match="invalid PackageID"):
        unsettled_dp_status_query({"PS100001' OR 1=1 --": 5})
    with pytest.raises(InvalidRequestError):
        unsettled_dp_status_query({})


def test_package_ids_are_chunked_by_200_without_repeats() -> None:
    ids = [f"PS1{n:05X}" for n in range(450)] + ["ps100000"]
    chunks = package_chunks(ids)
    assert [len(chunk) for chunk in chunks] == [200, 200, 50]
    assert chunks[0][0] == "PS100000" and sum(len(chunk) for chunk in chunks) == 450


def test_a_good_row_is_typed_and_the_old_version_in_state_0_is_not_installed_at_the_new() -> None:
    (row,) = _read(_row()).result().rows
    assert (row.package_id, row.dp_name, row.state, row.source_version) == ("PS100001", "DP01.corp.example", 0, 4)
    assert row.installed_at(4) and not row.installed_at(5)
    (leaving,) = _read(_row(State="5")).result().rows
    assert leaving.leaving and leaving.state is DpState.REMOVAL_RETRYING


@pytest.mark.parametrize(
    "overrides",
    [
        {"PackageID": None},
        {"PackageID": "PS1FFFFF"},  # not asked for
        {"PackageID": "PS100001' OR '1"},
        {"ServerNALPath": None},
        {"ServerNALPath": "x" * 2_000},
        {"ServerNALPath": ["a", "b"]},
        {"State": None},
        {"State": "-1"},
        {"State": "seven"},
        {"SourceVersion": "99999999999"},
        {"SourceVersion": "٣"},  # a digit, but not ASCII
    ],
    ids=lambda overrides: next(iter(overrides)) + ":" + str(next(iter(overrides.values())))[:12],
)
def test_a_row_missing_or_bending_a_property_is_refused_and_counted(
    overrides: dict[str, str | list[str | None] | None],
) -> None:
    batch = _read(_row(**overrides), _row(ServerNALPath=_NAL.replace("DP01", "DP02"))).result()
    assert (len(batch.rows), batch.rejected) == (1, 1)
    assert batch.problems and len(batch.problems[0]) < 200


def test_an_unknown_state_is_kept_as_unknown_never_as_installed() -> None:
    (row,) = _read(_row(State="42")).result().rows
    assert (row.state, row.raw_state, row.installed_at(0)) == (None, 42, False)


def test_a_huge_answer_is_cut_at_the_bound_and_duplicates_count_once() -> None:
    rows = [_row(ServerNALPath=_NAL.replace("DP01", f"DP{n:04d}")) for n in range(10_000)]
    reader = _read(_row(), _row(), *rows, max_rows=50)
    batch = reader.result()
    assert (len(batch.rows), batch.duplicates, batch.truncated) == (50, 1, True)


def test_messages_are_read_with_the_same_checks() -> None:
    reader = DpMessageReader(["PS100001"], max_rows=10)
    good = {"PackageID": "PS100001", "NALPath": _NAL, "MessageID": "2330", "MessageState": "1"}
    assert reader.add(WmiInstance("SMS_DistributionDPStatus", dict(good)))
    assert reader.add(WmiInstance("SMS_DistributionDPStatus", {**good, "MessageID": "x"}))
    batch = merge_batches([reader.result(), _read(_row()).result()])
    assert (len(batch.messages), len(batch.rows), batch.rejected) == (1, 1, 1)
    assert batch.messages[0].message_id == 2330


_text = st.one_of(st.none(), st.text(max_size=80), st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(
    package_id=_text,
    nal=st.one_of(_text, st.text(alphabet='[]"\\:=.DPSMS_WNET01', max_size=120)),
    state=_text,
    version=_text,
    site=_text,
)
def test_any_row_is_read_or_refused_never_raised(
    package_id: str | list[str] | None, nal: str | list[str] | None, state: object, version: object, site: object
) -> None:
    instance = WmiInstance(
        _SUMMARIZER,
        {"PackageID": package_id, "ServerNALPath": nal, "State": state, "SourceVersion": version, "SiteCode": site},  # type: ignore[dict-item]
    )
    reader = DpStatusReader(["PS100001"], max_rows=5)
    assert reader.add(instance)
    batch = reader.result()
    assert len(batch.rows) + batch.rejected == 1
    for row in batch.rows:
        assert row.package_id == "PS100001" and row.dp_name and 0 <= row.source_version <= 0xFFFFFFFF
        assert validate_nal_path(row.nal_path) == row.nal_path


@settings(max_examples=200, deadline=None)
@given(nal=st.text(max_size=600))
def test_any_text_is_a_valid_nal_path_or_a_clear_error(nal: str) -> None:
    try:
        checked = validate_nal_path(nal)
    except InvalidRequestError as exc:
        assert "invalid NAL path" in exc.message and len(exc.message) < 200
    else:
        assert dp_name_from_nal(checked)


def test_content_counts_are_one_row_per_package_and_refuse_bad_numbers() -> None:
    assert content_counts_query(["PS100001"]) == (
        "SELECT PackageID, Targeted, NumberSuccess, NumberInProgress, NumberErrors, NumberUnknown "
        "FROM SMS_ObjectContentExtraInfo WHERE PackageID = 'PS100001'"
    )
    good = {
        "PackageID": "PS100001",
        "Targeted": "20",
        "NumberSuccess": "18",
        "NumberInProgress": "1",
        "NumberErrors": "1",
        "NumberUnknown": "0",
    }
    reader = ContentCountsReader(["PS100001", "PS100002"], max_rows=10)
    for properties in (good, good, {**good, "PackageID": "PS100002", "NumberErrors": "-3"}):
        assert reader.add(WmiInstance("SMS_ObjectContentExtraInfo", dict(properties)))
    batch = reader.result()
    assert [(c.package_id, c.targeted, c.success, c.errors) for c in batch.counts] == [("PS100001", 20, 18, 1)]
    assert (batch.duplicates, batch.rejected) == (1, 1)
