"""The chaos suite's accounting and its generators (pure parts; the scenarios run in tests/integration)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from chaos.cli import build_parser
from chaos.hostile_kwargs import PREFIX_CHARS, fixed_cases, hypothesis_examples, json_kwargs
from chaos.hostile_replies import HEAVY_KINDS, KINDS, WsmanCall, plan_kinds, reply_for
from chaos.report import LATENESS_BOUND_S, FinalRecord, Sent, format_row, tally

FIRST_SEND_S = 1_000.0


def final(task_id: str | None, status: str = "accepted", at_s: float = 1_001.0) -> FinalRecord:
    return FinalRecord(task_id, status, int(at_s * 1000))


def test_tally_counts_lost_duplicates_and_exactly_one_final_per_task_id() -> None:
    """Finals are matched to sent messages by task id: none is lost, two is one duplicate, strangers are noted."""
    sent = [Sent("a", "valid"), Sent("b", "valid"), Sent("c", "hostile")]
    finals = [final("a"), final("b"), final("b", at_s=1_004.5), final("stranger"), final(None)]
    row = tally("demo", sent, finals, {}, first_send_epoch_s=FIRST_SEND_S)
    assert (row.requests, row.exactly_one_final, row.lost, row.duplicate_finals) == (3, 1, 1, 1)
    assert row.details["lost_by_label"] == {"hostile": 1}
    assert row.details["finals_for_unknown_task_ids"] == 2
    assert row.drain_s == 4.5
    assert not row.ok


def test_tally_extra_refreshes_are_accepted_calls_beyond_successful_valid_requests() -> None:
    """A package refreshed twice for one accepted request is one extra; an invalid request's refresh is extra too."""
    sent = [
        Sent("a", "valid", valid=True, package_id="PS100001"),
        Sent("b", "valid", valid=True, package_id="PS100002"),
        Sent("c", "force='yes'", valid=False, package_id="PS100003"),
    ]
    finals = [final("a"), final("b", "failed"), final("c")]
    calls = {"PS100001": 2, "PS100002": 0, "PS100003": 1}
    row = tally("demo", sent, finals, calls, first_send_epoch_s=FIRST_SEND_S)
    assert row.extra_refreshes == 2
    assert row.details["extra_refreshes_by_package"] == {"PS100001": 1, "PS100003": 1}


def test_tally_fails_an_accepted_request_whose_refresh_never_reached_the_provider() -> None:
    """An accepted final with no accepted RefreshPkgSource in the call log breaks the 'landed' check."""
    row = tally("demo", [Sent("a", "valid", valid=True, package_id="PS100001")], [final("a")], {}, first_send_epoch_s=0)
    assert row.lost == 0 and row.extra_refreshes == 0
    assert [check.name for check in row.failed_checks] == ["each accepted request's refresh landed"]


def test_a_clean_row_is_ok_and_columns_that_do_not_apply_print_as_na() -> None:
    """A row with nothing lost, duplicated or extra is ok; None columns print n/a."""
    row = tally("demo", [Sent("a", "x")], [final("a", "rejected")], {}, first_send_epoch_s=FIRST_SEND_S)
    assert row.ok and "ok" in format_row(row)
    hostile_xml_like = row.__class__(
        scenario="hostile-xml", requests=1, exactly_one_final=1, lost=0, duplicate_finals=None,
        extra_refreshes=None, drain_s=1.0,
    )  # fmt: skip
    assert hostile_xml_like.ok and format_row(hostile_xml_like).count("n/a") == 3


def test_worst_lateness_is_the_last_final_after_the_end_of_the_fault() -> None:
    """Lateness counts from the fault's end; a final before it is 0 late; over LATENESS_BOUND_S fails the row."""
    sent = [Sent("a", "valid"), Sent("b", "valid")]
    on_time = tally("demo", sent, [final("a", at_s=1_003.0), final("b", at_s=1_030.0)], {},
                    first_send_epoch_s=FIRST_SEND_S, lateness_from_epoch_s=1_010.0)  # fmt: skip
    assert on_time.lateness_s == 20.0 and on_time.ok
    late_at_s = 1_010.0 + LATENESS_BOUND_S + 0.5
    late = tally("demo", sent, [final("a", at_s=1_003.0), final("b", at_s=late_at_s)], {},
                 first_send_epoch_s=FIRST_SEND_S, lateness_from_epoch_s=1_010.0)  # fmt: skip
    assert late.lateness_s == LATENESS_BOUND_S + 0.5 and not late.ok
    assert "too late" in format_row(late)


def test_a_message_that_entered_after_the_fault_is_late_from_its_own_entry() -> None:
    """A bulk child dispatched after the fault ended counts its lateness from its dispatch."""
    sent = [Sent("a", "child"), Sent("b", "child", sent_epoch_s=1_050.0)]
    row = tally("demo", sent, [final("a", at_s=1_020.0), final("b", at_s=1_055.0)], {},
                first_send_epoch_s=FIRST_SEND_S, lateness_from_epoch_s=1_010.0)  # fmt: skip
    assert row.lateness_s == 10.0


def test_reply_plan_meets_every_kind_first_and_repeats_for_a_seed() -> None:
    """A run of at least len(KINDS) replies contains every kind; the same seed gives the same plan."""
    plan = plan_kinds(60, seed=3)
    assert set(plan[: len(KINDS)]) == set(KINDS)
    assert plan == plan_kinds(60, seed=3) and plan != plan_kinds(60, seed=4)
    assert sum(kind in HEAVY_KINDS for kind in plan[len(KINDS) :]) < 20


def test_entity_expansion_reply_hides_its_dtd_behind_a_comment_that_defeats_the_ratio_limit() -> None:
    """The DTD starts past the first 4 KB, and the comment keeps expansion / input under expat's 100x."""
    reply = reply_for("dtd_after_comment", random.Random(1), WsmanCall("uuid:1", "get"))
    assert isinstance(reply.chunks, list)
    head, body = reply.chunks
    assert head.index(b"<!DOCTYPE") > 4096
    expansion = 1024 * 16**4 * body.count(b"&e4;")
    assert expansion >= 64 * 1024 * 1024
    assert expansion / (len(head) + len(body)) < 100


def test_utf16_reply_carries_a_dtd_a_latin1_probe_cannot_see() -> None:
    """The UTF-16 reply has a DOCTYPE in UTF-16, invisible to a byte search for '<!DOCTYPE'."""
    reply = reply_for("dtd_utf16", random.Random(1), WsmanCall("uuid:1", "invoke"))
    body = b"".join(reply.chunks)
    assert b"<!DOCTYPE" not in body and "<!DOCTYPE" in body.decode("utf-16")


def take_from(packages: list[dict[str, Any]]) -> Any:
    def take(task_sequence: bool) -> dict[str, Any]:
        cls = "SMS_TaskSequencePackage" if task_sequence else "SMS_Package"
        package = {"PackageID": f"PS1{len(packages):05X}", "class": cls, "PkgSourceFlag": 2}
        packages.append(package)
        return package

    return take


def test_hostile_cases_cover_every_family_and_repeat_for_a_seed() -> None:
    """The hand-written cases name each family (and a real bulk when given) and their packages; a seed repeats them."""
    cases = fixed_cases(take_from([]), random.Random(5))
    again = fixed_cases(take_from([]), random.Random(5))
    assert [c.label for c in cases] == [c.label for c in again]
    labels = " ".join(case.label for case in cases)
    for family in ("surrogate", "control characters", "jndi", "64-char prefix", "1 MB", "100k", "nested 1000",
                   "reserved name self", "forged retry_state", "force='yes'", "resent fixed", "raw: ",
                   "correlation_id bulk-shaped", "correlation_id NaN", "shaped like a child"):  # fmt: skip
        assert family in labels, family
    named = fixed_cases(take_from([]), random.Random(5), bulk_id=f"bulk-{'a' * 32}")
    assert {c.label for c in named} - {c.label for c in cases} == {
        "correlation_id a real bulk's id",
        "invalid package_id, correlation_id a real bulk's id",
        "request_id shaped like a child of a real bulk's id",
        "request_id shaped like a child of a real bulk's id, unconfigured site",
    }
    assert all(case.package_id for case in cases if case.valid)
    assert any(case.phase == 2 for case in cases) and any(case.raw is not None for case in cases)
    pair = [c.kwargs["request_id"] for c in cases if c.label.startswith("too-long pair") and c.kwargs]
    assert len(pair) == 2 and pair[0][:PREFIX_CHARS] == pair[1][:PREFIX_CHARS] and pair[0] != pair[1]


def test_hypothesis_draws_are_a_function_of_the_seed() -> None:
    """The seeded @given wrapper yields exactly `count` examples, the same ones for the same seed."""
    first = hypothesis_examples(json_kwargs(), 25, seed_value=11)
    assert len(first) == 25
    assert repr(first) == repr(hypothesis_examples(json_kwargs(), 25, seed_value=11))


def test_cli_refuses_a_request_count_out_of_range_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`--requests 0` is a usage error (exit 2) naming the rule, not a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--requests", "0"])
    assert exit_info.value.code == 2
    assert "must be between 1 and" in capsys.readouterr().err
