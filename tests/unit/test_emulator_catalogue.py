"""The emulated catalogue: seeded generation and ConfigMgr's refresh semantics on a fake clock."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from emulator.settings import EmulatorSettings
from emulator.sms.catalogue import Catalogue
from emulator.sms.packages import (
    BASE_CLASS,
    PACKAGE_CLASSES,
    RETURN_MEDIUM_NOT_READY,
    RETURN_NO_SOURCE,
    RETURN_SUCCESS,
    STORAGE_COMPRESS,
    STORAGE_DIRECT,
    STORAGE_NO_SOURCE,
)
from testing.fixtures_emulator import FakeClock
from testing.fixtures_emulator import instance_properties as props


def make(settings: EmulatorSettings | None = None, clock: FakeClock | None = None) -> tuple[Catalogue, FakeClock]:
    clock = clock or FakeClock()
    catalogue = Catalogue(settings or EmulatorSettings(), clock=clock.monotonic, wall_clock=clock.wall)
    return catalogue, clock


def first(catalogue: Catalogue, *, flag: int, ready: bool | None = None) -> str:
    """The id of the first package with that PkgSourceFlag (and medium state)."""
    for summary in catalogue.summaries():
        if summary["PkgSourceFlag"] == flag and (ready is None or summary["medium_ready"] is ready):
            return str(summary["PackageID"])
    raise AssertionError(f"no package with flag {flag} / ready {ready}")


def test_same_seed_gives_the_same_catalogue() -> None:
    """Two catalogues from the same settings are identical, whatever the clocks say."""
    one, _ = make()
    other_clock = FakeClock()
    other_clock.advance(10_000)
    two, _ = make(clock=other_clock)
    assert one.summaries() == two.summaries()
    assert [one.snapshot(p) for p in one.package_ids()] == [two.snapshot(p) for p in two.package_ids()]


def test_another_seed_gives_another_catalogue() -> None:
    """The seed changes the catalogue."""
    one, _ = make(EmulatorSettings(seed=1))
    two, _ = make(EmulatorSettings(seed=2))
    assert one.summaries() != two.summaries()


def test_package_ids_are_site_code_and_five_hex_digits() -> None:
    """Every PackageID is the site code followed by 5 upper-case hex digits, unique."""
    catalogue, _ = make(EmulatorSettings(site_code="ABC", package_count=300))
    ids = catalogue.package_ids()
    assert len(ids) == 300 == len(set(ids))
    assert all(re.fullmatch(r"ABC[0-9A-F]{5}", package_id) for package_id in ids)


def test_class_mix_favours_packages_and_driver_packages() -> None:
    """SMS_Package and SMS_DriverPackage are the two most common classes; all are valid."""
    catalogue, _ = make(EmulatorSettings(package_count=500))
    counts = Counter(summary["class"] for summary in catalogue.summaries())
    assert {name for name, _ in counts.most_common(2)} == {"SMS_Package", "SMS_DriverPackage"}
    assert set(counts) <= set(PACKAGE_CLASSES)


def test_names_are_plausible_and_unique() -> None:
    """Driver packages are named like "Dell Latitude 7440 Drivers A05"; names do not repeat."""
    catalogue, _ = make(EmulatorSettings(package_count=300))
    summaries = catalogue.summaries()
    names = [str(summary["Name"]) for summary in summaries]
    assert len(set(names)) == len(names)
    drivers = [str(s["Name"]) for s in summaries if s["class"] == "SMS_DriverPackage"]
    assert drivers
    assert all(re.fullmatch(r"(Dell|HP|Lenovo|Microsoft) .+ Drivers \S+", name) for name in drivers)


def test_source_flag_shares_follow_the_settings() -> None:
    """compress_share of packages are STORAGE_COMPRESS, a few NO_SOURCE, the rest DIRECT."""
    settings = EmulatorSettings(package_count=200, compress_share=0.25, medium_not_ready_share=0.5)
    catalogue, _ = make(settings)
    summaries = catalogue.summaries()
    flags = Counter(summary["PkgSourceFlag"] for summary in summaries)
    assert flags[STORAGE_COMPRESS] == 50
    assert 1 <= flags[STORAGE_NO_SOURCE] <= 10
    assert flags[STORAGE_DIRECT] == 200 - 50 - flags[STORAGE_NO_SOURCE]
    not_ready = [s for s in summaries if s["PkgSourceFlag"] == STORAGE_COMPRESS and s["medium_ready"] is False]
    assert len(not_ready) == 25


def test_source_paths_are_unc_and_compressed_packages_have_a_stored_copy() -> None:
    """Sources are UNC paths (none for NO_SOURCE); STORAGE_COMPRESS packages have a StoredPkgPath."""
    catalogue, _ = make(EmulatorSettings(package_count=100))
    for package_id in catalogue.package_ids():
        instance = props(catalogue, package_id)
        if instance["PkgSourceFlag"] == STORAGE_NO_SOURCE:
            assert instance["PkgSourcePath"] is None
        else:
            assert str(instance["PkgSourcePath"]).startswith("\\\\")
        assert (instance["StoredPkgPath"] is not None) == (instance["PkgSourceFlag"] == STORAGE_COMPRESS)


def test_a_package_is_an_instance_of_exactly_one_class() -> None:
    """Looking a package up through another class finds nothing; the base class lists it."""
    catalogue, _ = make()
    package_id = catalogue.package_ids()[0]
    own_class = catalogue.class_of(package_id)
    assert own_class is not None
    instance = catalogue.instance(own_class, package_id)
    assert instance is not None
    assert instance["PackageType"] == PACKAGE_CLASSES[own_class]
    for other in set(PACKAGE_CLASSES) - {own_class}:
        assert catalogue.instance(other, package_id) is None
    assert catalogue.instance(BASE_CLASS, package_id) is None
    assert package_id in {p["PackageID"] for _, p in catalogue.instances(BASE_CLASS)}


def test_class_names_are_case_insensitive() -> None:
    """canonical_class accepts any case and rejects unknown classes."""
    catalogue, _ = make()
    assert catalogue.canonical_class("sms_driverpackage") == "SMS_DriverPackage"
    assert catalogue.canonical_class("SMS_Nope") is None


def test_refresh_with_no_delay_bumps_the_version_at_once() -> None:
    """distmgr_delay_s=0: SourceVersion+1, SourceDate and LastRefreshTime now, no action left."""
    catalogue, clock = make()
    package_id = first(catalogue, flag=STORAGE_DIRECT)
    before = props(catalogue, package_id)
    outcome = catalogue.refresh(package_id)
    after = props(catalogue, package_id)
    assert (outcome.result, outcome.return_value, outcome.fault) == ("accepted", RETURN_SUCCESS, False)
    assert after["SourceVersion"] == before["SourceVersion"] + 1  # type: ignore[operator]
    now = datetime.fromtimestamp(clock.wall_s, tz=UTC)
    assert after["SourceDate"] == after["LastRefreshTime"] == now
    assert after["ActionInProgress"] == 0


def test_refresh_with_a_delay_shows_action_in_progress_until_distmgr_is_done() -> None:
    """With a delay, ActionInProgress is 1 until it elapses; then the version is bumped."""
    catalogue, clock = make(EmulatorSettings(distmgr_delay_s=30))
    package_id = first(catalogue, flag=STORAGE_DIRECT)
    version = props(catalogue, package_id)["SourceVersion"]
    assert catalogue.refresh(package_id).return_value == RETURN_SUCCESS
    pending = props(catalogue, package_id)
    assert (pending["ActionInProgress"], pending["SourceVersion"]) == (1, version)
    clock.advance(29.9)
    assert props(catalogue, package_id)["ActionInProgress"] == 1
    due_wall = clock.wall_s + 0.1
    clock.advance(5)  # read later than due: dates say when DistMgr finished, not when we looked
    done = props(catalogue, package_id)
    assert (done["ActionInProgress"], done["SourceVersion"]) == (0, version + 1)  # type: ignore[operator]
    assert done["SourceDate"] == datetime.fromtimestamp(int(due_wall), tz=UTC)


def test_refreshes_while_one_is_pending_are_coalesced() -> None:
    """A second refresh during a pending one is accepted and bumps the version only once."""
    catalogue, clock = make(EmulatorSettings(distmgr_delay_s=10))
    package_id = first(catalogue, flag=STORAGE_DIRECT)
    version = props(catalogue, package_id)["SourceVersion"]
    assert catalogue.refresh(package_id).return_value == RETURN_SUCCESS
    clock.advance(5)
    assert catalogue.refresh(package_id).return_value == RETURN_SUCCESS
    clock.advance(5)
    assert props(catalogue, package_id)["SourceVersion"] == version + 1  # type: ignore[operator]


def test_refresh_of_a_compressed_package_updates_its_stored_version() -> None:
    """A refreshed STORAGE_COMPRESS package's StoredPkgVersion follows SourceVersion."""
    catalogue, _ = make()
    package_id = first(catalogue, flag=STORAGE_COMPRESS, ready=True)
    catalogue.refresh(package_id)
    after = props(catalogue, package_id)
    assert after["StoredPkgVersion"] == after["SourceVersion"]


def test_medium_not_ready_fails_with_error_not_ready_and_leaves_the_package_alone() -> None:
    """return_value mode: ReturnValue 21 (ERROR_NOT_READY), no version change."""
    catalogue, _ = make()
    package_id = first(catalogue, flag=STORAGE_COMPRESS, ready=False)
    before = props(catalogue, package_id)
    outcome = catalogue.refresh(package_id)
    assert (outcome.result, outcome.return_value, outcome.fault) == ("medium_not_ready", RETURN_MEDIUM_NOT_READY, False)
    assert props(catalogue, package_id) == before


def test_medium_not_ready_in_fault_mode_asks_for_a_fault() -> None:
    """fault mode: the outcome says to raise a WMI failure instead of returning."""
    catalogue, _ = make(EmulatorSettings(medium_failure_mode="fault"))
    package_id = first(catalogue, flag=STORAGE_COMPRESS, ready=False)
    outcome = catalogue.refresh(package_id)
    assert outcome.fault
    assert "not ready" in catalogue.medium_not_ready_description(package_id)


def test_medium_becomes_ready_after_the_configured_failed_attempts() -> None:
    """medium_ready_after_attempts=2: two attempts fail, the third is accepted."""
    catalogue, _ = make(EmulatorSettings(medium_ready_after_attempts=2))
    package_id = first(catalogue, flag=STORAGE_COMPRESS, ready=False)
    results = [catalogue.refresh(package_id).return_value for _ in range(3)]
    assert results == [RETURN_MEDIUM_NOT_READY, RETURN_MEDIUM_NOT_READY, RETURN_SUCCESS]


def test_medium_becomes_ready_seconds_after_the_first_failed_attempt() -> None:
    """medium_ready_after_s counts from the package's first failed attempt, not from start."""
    catalogue, clock = make(EmulatorSettings(medium_ready_after_s=60))
    package_id = first(catalogue, flag=STORAGE_COMPRESS, ready=False)
    clock.advance(3_600)  # time before the first attempt does not count
    assert catalogue.refresh(package_id).return_value == RETURN_MEDIUM_NOT_READY
    clock.advance(59)
    assert catalogue.refresh(package_id).return_value == RETURN_MEDIUM_NOT_READY
    clock.advance(1)
    assert catalogue.refresh(package_id).return_value == RETURN_SUCCESS


def test_set_medium_ready_changes_only_compressed_packages_and_reports_them() -> None:
    """set_medium_ready returns the ids whose state changed; other flags are untouched."""
    catalogue, _ = make()
    not_ready = first(catalogue, flag=STORAGE_COMPRESS, ready=False)
    direct = first(catalogue, flag=STORAGE_DIRECT)
    assert catalogue.set_medium_ready(direct, True) == []
    assert catalogue.set_medium_ready(not_ready, True) == [not_ready]
    assert catalogue.set_medium_ready(not_ready, True) == []
    assert catalogue.refresh(not_ready).return_value == RETURN_SUCCESS
    every = catalogue.set_medium_ready(None, False)
    assert not_ready in every
    assert all(catalogue.class_of(p) and props(catalogue, p)["PkgSourceFlag"] == STORAGE_COMPRESS for p in every)
    assert catalogue.refresh(not_ready).return_value == RETURN_MEDIUM_NOT_READY


def test_no_source_packages_have_nothing_to_refresh() -> None:
    """STORAGE_NO_SOURCE: ReturnValue 50 (ERROR_NOT_SUPPORTED), nothing changes."""
    catalogue, _ = make()
    package_id = first(catalogue, flag=STORAGE_NO_SOURCE)
    before = props(catalogue, package_id)
    assert catalogue.refresh(package_id).return_value == RETURN_NO_SOURCE
    assert props(catalogue, package_id) == before


def test_snapshot_is_json_ready_and_shows_emulator_state() -> None:
    """snapshot() serialises to JSON, with ISO datetimes and the medium state."""
    catalogue, _ = make()
    package_id = first(catalogue, flag=STORAGE_COMPRESS, ready=False)
    view = catalogue.snapshot(package_id.lower())
    assert view is not None
    assert json.loads(json.dumps(view))["PackageID"] == package_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", view["SourceDate"])
    assert view["_medium_ready"] is False
    assert catalogue.snapshot("PS1FFFFF") is None


@pytest.mark.parametrize("count", [0, 1, 5])
def test_tiny_catalogues_are_valid(count: int) -> None:
    """Small package counts still build a consistent catalogue."""
    catalogue, _ = make(replace(EmulatorSettings(), package_count=count))
    assert len(catalogue.package_ids()) == count
