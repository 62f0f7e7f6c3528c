"""PkgXferMgr's model (emulator.sms.pkgxfer) and the content status classes on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.settings import EmulatorSettings
from emulator.sms.catalogue import Catalogue
from emulator.sms.content_status import build_distribution_points, nal_path
from emulator.sms.pkgxfer import (
    JOB_FAILED,
    STATE_CONTENT_UPDATING,
    STATE_INSTALL_FAILED,
    STATE_INSTALL_RETRYING,
    STATE_INSTALLED,
    DistributionPoint,
    PkgXferMgr,
    Schedule,
)
from emulator.sms.wql import Value, parse, resolve
from testing.fixtures_emulator import FakeClock, make_emulator_settings


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def _dps(count: int = 3, *, pull: int = 0) -> list[DistributionPoint]:
    return [
        DistributionPoint(
            i,
            f"DP{i + 1:02d}.lab.local",
            nal_path(f"DP{i + 1:02d}.lab.local", "PS1"),
            "PS1",
            pull=i >= count - pull,
        )
        for i in range(count)
    ]


def _xfer(clock: Clock, **overrides: object) -> PkgXferMgr:
    options: dict[str, object] = {
        "dps": _dps(),
        "jobs": 10,
        "copy_time_s": 10.0,
        "pull_copy_factor": 3.0,
        "retry_count": 2,
        "retry_delay_s": 5.0,
        "seed": 1,
        "clock": clock,
    }
    options.update(overrides)
    return PkgXferMgr(**options)  # type: ignore[arg-type]


def _states(xfer: PkgXferMgr, package_id: str = "PS100001") -> list[tuple[int, int]]:
    xfer.replay(xfer._clock())
    rows = xfer.rows(package_id)
    return [(rows[dp.index].state, rows[dp.index].version) for dp in xfer.dps]


def test_a_processed_package_is_updating_on_every_dp_then_installed_at_the_new_version() -> None:
    clock = Clock()
    xfer = _xfer(clock)
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    assert _states(xfer) == [(STATE_CONTENT_UPDATING, 1)] * 3
    clock.now_s += 10.0
    assert _states(xfer) == [(STATE_INSTALLED, 2)] * 3


def test_an_offline_dp_retries_then_fails_and_its_job_stays_failed() -> None:
    """retry_count 2, copy 10 s, delay 5 s: attempts end at 10, 25, 40 s; failed after the third."""
    clock = Clock()
    dps = _dps()
    dps[1].offline = True
    xfer = _xfer(clock, dps=dps)
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    clock.now_s += 10.0
    assert _states(xfer)[1] == (STATE_INSTALL_RETRYING, 1)
    clock.now_s += 29.0
    assert _states(xfer)[1] == (STATE_INSTALL_RETRYING, 1)
    clock.now_s += 1.0
    assert _states(xfer)[1] == (STATE_INSTALL_FAILED, 1)
    (job,) = list(xfer.open_jobs())
    assert (job.state, job.attempt, job.dp) == (JOB_FAILED, 3, 1)


def test_push_transfers_wait_for_a_free_job_slot_and_pull_dps_take_none() -> None:
    """One push slot, two push DPs and one pull DP: the pull DP copies meanwhile (3 x 10 s)."""
    clock = Clock()
    xfer = _xfer(clock, jobs=1, dps=_dps(3, pull=1))
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    clock.now_s += 10.0
    assert [state for state, _v in _states(xfer)] == [STATE_INSTALLED, STATE_CONTENT_UPDATING, STATE_CONTENT_UPDATING]
    clock.now_s += 10.0
    assert [state for state, _v in _states(xfer)] == [STATE_INSTALLED, STATE_INSTALLED, STATE_CONTENT_UPDATING]
    clock.now_s += 10.0
    assert _states(xfer) == [(STATE_INSTALLED, 2)] * 3


def test_a_closed_schedule_holds_transfers_until_it_opens() -> None:
    clock = Clock()
    xfer = _xfer(clock)
    xfer.set_schedule(0, Schedule(None))
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    clock.now_s += 100.0
    assert _states(xfer)[0] == (STATE_CONTENT_UPDATING, 1)
    xfer.set_schedule(0, None)
    clock.now_s += 10.0
    assert _states(xfer)[0] == (STATE_INSTALLED, 2)


def test_a_schedule_window_starts_transfers_only_while_open() -> None:
    """Open the first 5 s of every 60 s from t=100: a job ready at 110 starts at 160, ends at 170."""
    clock = Clock()
    xfer = _xfer(clock)
    xfer.set_schedule(0, Schedule(60.0, 5.0, origin=100.0))
    clock.now_s = 110.0
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=110.0)
    clock.now_s = 169.0
    assert _states(xfer)[0] == (STATE_CONTENT_UPDATING, 1)
    clock.now_s = 170.0
    assert _states(xfer)[0] == (STATE_INSTALLED, 2)


def test_a_new_version_supersedes_the_job_in_flight() -> None:
    clock = Clock()
    xfer = _xfer(clock)
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    clock.now_s += 5.0
    xfer.submit("PS100001", version=3, old_version=2, total_bytes=100, at=clock.now_s)
    clock.now_s += 5.0  # the first jobs end now: superseded, their result is ignored
    assert _states(xfer) == [(STATE_CONTENT_UPDATING, 1)] * 3
    clock.now_s += 5.0
    assert _states(xfer) == [(STATE_INSTALLED, 3)] * 3


def test_redistribute_re_sends_one_package_to_one_failed_dp() -> None:
    clock = Clock()
    dps = _dps()
    dps[2].offline = True
    xfer = _xfer(clock, dps=dps, retry_count=0)
    xfer.submit("PS100001", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    clock.now_s += 10.0
    assert _states(xfer)[2] == (STATE_INSTALL_FAILED, 1)
    xfer.set_offline(2, False)
    xfer.redistribute("PS100001", 2, version=2, total_bytes=100)
    assert _states(xfer)[2] == (STATE_CONTENT_UPDATING, 1)
    clock.now_s += 10.0
    assert _states(xfer) == [(STATE_INSTALLED, 2)] * 3
    assert list(xfer.open_jobs()) == []


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=12))
def test_reading_often_or_rarely_gives_the_same_rows(steps: list[float]) -> None:
    """Lazy replay: polling at every step or once at the end ends in the same rows and counters."""
    dps_often, dps_rarely = _dps(4, pull=1), _dps(4, pull=1)
    for dps in (dps_often, dps_rarely):
        dps[0].failure_share = 0.5
        dps[1].offline = True
    often_clock, rarely_clock = Clock(), Clock()
    often = _xfer(often_clock, dps=dps_often, jobs=2)
    rarely = _xfer(rarely_clock, dps=dps_rarely, jobs=2)
    for xfer, clock in ((often, often_clock), (rarely, rarely_clock)):
        for n in range(3):
            xfer.submit(f"PS10000{n}", version=2, old_version=1, total_bytes=100, at=clock.now_s)
    for step in steps:
        often_clock.now_s += step
        rarely_clock.now_s += step
        often.replay(often_clock.now_s)
    rarely.replay(rarely_clock.now_s)
    for n in range(3):
        package_id = f"PS10000{n}"
        assert _states(often, package_id) == _states(rarely, package_id)
    assert often.snapshot()["counters"] == rarely.snapshot()["counters"]


def test_settings_name_the_dps_and_refuse_an_unknown_one() -> None:
    dps = build_distribution_points(
        EmulatorSettings(dp_count=4, pull_dp_count=1, dp_offline=("DP02",), dp_failing=("dp03.lab.local",))
    )
    assert [(dp.short_name, dp.pull, dp.offline, dp.failure_share) for dp in dps] == [
        ("DP01", False, False, 0.0),
        ("DP02", False, True, 0.0),
        ("DP03", False, False, 0.3),
        ("DP04", True, False, 0.0),
    ]
    assert dps[0].nal_path == '["Display=\\\\DP01.lab.local\\"]MSWNET:["SMS_SITE=PS1"]\\\\DP01.lab.local\\'
    with pytest.raises(ValueError, match="no DP named 'DP09'"):
        build_distribution_points(EmulatorSettings(dp_offline=("DP09",)))


def _wql(columns: str, class_name: str, where: str) -> str:
    return f"SELECT {columns} FROM {class_name} WHERE {where}"  # noqa: S608 - WQL for the emulator, not SQL


def _query(catalogue: Catalogue, wql: str) -> list[dict[str, Value]]:
    query = parse(wql)
    class_name = catalogue.canonical_class(query.class_name)
    assert class_name is not None
    resolved = resolve(query, class_name, catalogue.property_names(class_name))
    return [
        properties for _cls, properties in catalogue.render(class_name, catalogue.matching(class_name, resolved.where))
    ]


def test_rows_read_state_0_at_the_old_version_until_distmgr_has_processed_the_package() -> None:
    """The V0/V1 trap: accepted, DistMgr still working: every row is State 0 at V0."""
    clock = FakeClock()
    catalogue = Catalogue(
        make_emulator_settings(distmgr_time_per_package_s=60.0, dp_copy_time_s=10.0),
        clock=clock.monotonic,
        wall_clock=clock.wall,
    )
    package = next(p for p in catalogue.summaries() if p["PkgSourceFlag"] == 2)
    package_id, v0 = package["PackageID"], package["SourceVersion"]
    wql = _wql(
        "PackageID, State, SourceVersion", "SMS_PackageStatusDistPointsSummarizer", f"PackageID = '{package_id}'"
    )
    assert catalogue.refresh(package_id).result == "accepted"
    clock.advance(59.0)
    assert {(row["State"], row["SourceVersion"]) for row in _query(catalogue, wql)} == {(0, v0)}
    clock.advance(1.0)
    assert {(row["State"], row["SourceVersion"]) for row in _query(catalogue, wql)} == {(7, v0)}
    clock.advance(30.0)  # push DPs at +10 s, the pull DP at +30 s
    assert {(row["State"], row["SourceVersion"]) for row in _query(catalogue, wql)} == {(0, v0 + 1)}
    (extra,) = _query(catalogue, _wql("*", "SMS_ObjectContentExtraInfo", f"PackageID = '{package_id}'"))
    assert (extra["Targeted"], extra["NumberSuccess"], extra["NumberInProgress"]) == (5, 5, 0)


def test_a_chunked_or_query_selects_rows_of_exactly_those_packages() -> None:
    clock = FakeClock()
    catalogue = Catalogue(make_emulator_settings(package_count=30), clock=clock.monotonic, wall_clock=clock.wall)
    ids = [p["PackageID"] for p in catalogue.summaries()][:7]
    clauses = " OR ".join(f"PackageID = '{package_id.lower()}'" for package_id in ids)
    rows = _query(catalogue, _wql("*", "SMS_PackageStatusDistPointsSummarizer", clauses))
    assert len(rows) == 7 * 5
    assert {row["PackageID"] for row in rows} == set(ids)


def test_a_pinned_query_with_more_conditions_still_evaluates_them() -> None:
    """The index settles `PackageID = ... OR ...` alone; anything ANDed to it is still evaluated."""
    clock = FakeClock()
    catalogue = Catalogue(make_emulator_settings(dp_copy_time_s=10.0), clock=clock.monotonic, wall_clock=clock.wall)
    package = next(p for p in catalogue.summaries() if p["PkgSourceFlag"] == 2)
    other = next(p for p in catalogue.summaries() if p["PackageID"] != package["PackageID"])
    assert catalogue.refresh(package["PackageID"]).result == "accepted"
    pinned = f"(PackageID = '{package['PackageID']}' OR PackageID = '{other['PackageID']}')"
    summarizer = "SMS_PackageStatusDistPointsSummarizer"
    assert len(_query(catalogue, _wql("*", summarizer, pinned))) == 10
    updating = _query(catalogue, _wql("*", summarizer, f"{pinned} AND State = 7"))
    assert {row["PackageID"] for row in updating} == {package["PackageID"]} and len(updating) == 5
