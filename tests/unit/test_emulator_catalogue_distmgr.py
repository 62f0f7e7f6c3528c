"""The catalogue with Distribution Manager's queue, and its PackageID index, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from emulator.settings import EmulatorSettings
from emulator.sms.catalogue import Catalogue
from emulator.sms.packages import STORAGE_COMPRESS, STORAGE_DIRECT
from emulator.sms.provider import Provider
from emulator.sms.wql import parse, resolve
from emulator.sms.wql_eval import evaluate
from testing.fixtures_emulator import FakeClock, instance_properties
from testing.wsman_requests import invoke_envelope, return_value


def make(**overrides: Any) -> tuple[Catalogue, FakeClock]:
    clock = FakeClock()
    settings = EmulatorSettings(package_count=overrides.pop("package_count", 60), **overrides)
    return Catalogue(settings, clock=clock.monotonic, wall_clock=clock.wall), clock


def ids(catalogue: Catalogue, *, flag: int, count: int) -> list[str]:
    """The first `count` packages with that source flag (and a ready medium)."""
    found = [
        str(s["PackageID"])
        for s in catalogue.summaries()
        if s["PkgSourceFlag"] == flag and s["medium_ready"] in (None, True)
    ]
    assert len(found) >= count
    return found[:count]


def props(catalogue: Catalogue, package_id: str) -> dict[str, Any]:
    return instance_properties(catalogue, package_id)


def at(wall_s: float) -> datetime:
    return datetime.fromtimestamp(int(wall_s), tz=UTC)


def test_an_accepted_refresh_is_in_progress_until_distmgr_processed_it() -> None:
    """ActionInProgress 1 and LastRefreshTime at acceptance; after the time per package the version
    is bumped, SourceDate says when, ActionInProgress is 0 and LastRefreshTime stays."""
    catalogue, clock = make(distmgr_time_per_package_s=30.0)
    (package_id,) = ids(catalogue, flag=STORAGE_DIRECT, count=1)
    version = props(catalogue, package_id)["SourceVersion"]
    accepted_wall = clock.wall_s
    assert catalogue.refresh(package_id).result == "accepted"
    pending = props(catalogue, package_id)
    assert (pending["ActionInProgress"], pending["SourceVersion"]) == (1, version)
    assert pending["LastRefreshTime"] == at(accepted_wall)
    clock.advance(45.0)
    done = props(catalogue, package_id)
    assert (done["ActionInProgress"], done["SourceVersion"]) == (0, version + 1)
    assert done["SourceDate"] == at(accepted_wall + 30.0)
    assert done["LastRefreshTime"] == at(accepted_wall)


def test_distmgr_processes_at_most_its_threads_and_queues_the_rest() -> None:
    """Five refreshes, three threads: three processing, two queued, all five in progress."""
    catalogue, clock = make(distmgr_threads=3, distmgr_time_per_package_s=10.0)
    package_ids = ids(catalogue, flag=STORAGE_DIRECT, count=5)
    for package_id in package_ids:
        catalogue.refresh(package_id)
    snapshot = catalogue.distmgr()
    assert (snapshot["threads"], snapshot["processing"], snapshot["queued"]) == (3, 3, 2)
    assert all(props(catalogue, package_id)["ActionInProgress"] == 1 for package_id in package_ids)
    assert catalogue.snapshot(package_ids[4])["_distmgr_state"] == "queued"  # type: ignore[index]
    clock.advance(10.0)
    assert [props(catalogue, package_id)["ActionInProgress"] for package_id in package_ids] == [0, 0, 0, 1, 1]
    clock.advance(10.0)
    assert catalogue.distmgr()["processed"] == 5


def test_a_refresh_coalesced_into_a_queued_one_bumps_once_but_restamps_last_refresh_time() -> None:
    """A second accepted refresh while queued: one SourceVersion step, LastRefreshTime of the second."""
    catalogue, clock = make(distmgr_threads=1, distmgr_time_per_package_s=10.0)
    blocker, package_id = ids(catalogue, flag=STORAGE_DIRECT, count=2)
    version = props(catalogue, package_id)["SourceVersion"]
    catalogue.refresh(blocker)
    catalogue.refresh(package_id)
    clock.advance(5.0)
    catalogue.refresh(package_id)
    second_wall = clock.wall_s
    clock.advance(100.0)
    done = props(catalogue, package_id)
    assert done["SourceVersion"] == version + 1
    assert done["LastRefreshTime"] == at(second_wall)
    assert catalogue.distmgr()["coalesced"] == 1


def test_processing_a_compressed_package_updates_its_stored_version() -> None:
    """StoredPkgVersion follows SourceVersion when DistMgr has processed a STORAGE_COMPRESS package."""
    catalogue, clock = make(distmgr_time_per_package_s=5.0)
    (package_id,) = ids(catalogue, flag=STORAGE_COMPRESS, count=1)
    before = props(catalogue, package_id)
    catalogue.refresh(package_id)
    assert props(catalogue, package_id)["StoredPkgVersion"] == before["StoredPkgVersion"]
    clock.advance(5.0)
    after = props(catalogue, package_id)
    assert after["StoredPkgVersion"] == after["SourceVersion"] == before["SourceVersion"] + 1


def test_a_held_distmgr_keeps_refreshes_in_progress_until_drained() -> None:
    """Provider.control_distmgr: hold, refresh, time passes, still 1; drain, 0 and bumped."""
    clock = FakeClock()
    settings = EmulatorSettings(package_count=40)
    provider = Provider(settings, clock=clock.monotonic, wall_clock=clock.wall)
    package = next(
        p for p in provider.packages() if p["PkgSourceFlag"] == STORAGE_DIRECT and p["class"] == "SMS_Package"
    )
    package_id, version = package["PackageID"], package["SourceVersion"]
    assert provider.control_distmgr(hold=True)["held"] is True
    invoke = invoke_envelope("http://emulator/wsman", settings.site_code, package_id, class_name="SMS_Package")
    assert return_value(provider.handle(invoke.encode(), user=settings.username).body) == 0
    clock.advance(3600.0)
    assert provider.package(package_id)["ActionInProgress"] == 1  # type: ignore[index]
    snapshot = provider.control_distmgr(drain=True)
    assert (snapshot["held"], snapshot["queued"], snapshot["processed"]) == (True, 0, 1)
    view = provider.package(package_id)
    assert view is not None
    assert (view["ActionInProgress"], view["SourceVersion"]) == (0, version + 1)


@pytest.mark.parametrize(
    "where",
    [
        "PackageID = '{a}'",
        "PackageID = '{a_lower}' OR PackageID = '{b}' OR PackageID = 'PS1FFFFF'",
        "(PackageID = '{a}' OR PackageID = '{b}') AND PkgSourceFlag = 2",
        "PackageID = '{a}' AND PackageID = '{b}'",
        "PackageID = '{a}' OR SourceVersion > 20",
        "NOT PackageID = '{a}'",
        "PackageID <> '{a}'",
        "PackageID LIKE '{a}'",
    ],
)
@pytest.mark.parametrize("class_name", ["SMS_PackageBaseclass", "SMS_Package", "SMS_DriverPackage"])
def test_indexed_matches_equal_a_full_scan(where: str, class_name: str) -> None:
    """Queries pinning PackageID use the index and find exactly what evaluating every instance finds."""
    catalogue, _ = make(package_count=300)
    summaries = catalogue.summaries()
    a = next(str(s["PackageID"]) for s in summaries if s["class"] == "SMS_Package")
    b = next(str(s["PackageID"]) for s in summaries if s["class"] == "SMS_DriverPackage")
    text = f"SELECT * FROM {class_name} WHERE " + where.format(a=a, a_lower=a.lower(), b=b)  # noqa: S608 - WQL from fixed parts
    query = resolve(parse(text), class_name, props(catalogue, a))
    scanned = [str(p["PackageID"]) for _own, p in catalogue.instances(class_name) if evaluate(query.where, p)]
    assert catalogue.matching(class_name, query.where) == scanned
