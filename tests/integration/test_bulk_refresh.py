"""Bulk refresh end to end: real Redis, real worker processes, the emulator over HTTP.

A bulk is submitted with the producer helper (producers.bulk.enqueue_bulk), enumerated by a worker
over WQL Enumerate/Pull, and fed to the workers paced by the site's provider slots.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from errors import InvalidRequestError
from producers.bulk import cancel_bulk, enqueue_bulk, get_bulk, new_bulk_id
from testing.fixtures_pipeline import Pipeline, PipelineFactory
from testing.waiting import wait_until
from worker.domain.criteria import DEFAULT_PACKAGE_CLASSES
from worker.domain.ids import child_request_id
from worker.stores.bulk_outcomes import BulkOutcome
from worker.stores.bulk_store import BulkRecord
from worker.stores.outcome_reader import read_events

pytestmark = pytest.mark.integration

PLAIN = 2  # PkgSourceFlag STORAGE_DIRECT: always accepted


def bulk_over(pipeline: Pipeline, bulk_id: str, timeout_s: float) -> BulkRecord:
    def over() -> bool:
        record = get_bulk(pipeline.settings, bulk_id)
        return record is not None and record.finished_at is not None

    assert wait_until(over, timeout_s=timeout_s, poll_s=0.2), repr(get_bulk(pipeline.settings, bulk_id))[:600]
    record = get_bulk(pipeline.settings, bulk_id)
    assert record is not None
    return record


def bulk_outcomes(pipeline: Pipeline, bulk_id: str) -> list[BulkOutcome]:
    client = pipeline.outcome_redis()
    try:
        events = read_events(client, pipeline.keys, count=1_000_000)
    finally:
        client.close()
    return [e.outcome for e in events if isinstance(e.outcome, BulkOutcome) and e.outcome.bulk_id == bulk_id]


def children_finals(pipeline: Pipeline, bulk_id: str) -> dict[str, list[Any]]:
    return {rid: finals for rid, finals in pipeline.finals().items() if rid.startswith(f"{bulk_id}:")}


@pytest.fixture(scope="module")
def big(pipeline_factory: PipelineFactory) -> Pipeline:
    """Two worker processes, a 1,500-package site (Basic), a cap of 6 operations at a time."""
    return pipeline_factory(
        emulator_overrides={"BS1": {"package_count": 1500, "compress_share": 0.0}},
        worker_extra_env={"SCCM_REFRESH_PROVIDERS__BS1__MAX_CONCURRENCY": "6"},
        concurrency=8,
        worker_processes=2,
    )


def test_a_thousand_package_bulk_ends_with_exact_counts_and_one_final_per_child(big: Pipeline) -> None:
    """Every selected package is refreshed once, counted once, and the bulk's outcome closes the job."""
    emulator = big.emulators["BS1"]
    expected = sum(1 for p in emulator.provider.packages() if p["class"] in DEFAULT_PACKAGE_CLASSES)
    assert expected >= 1000
    accepted_before = emulator.provider.call_totals()["accepted"]
    emulator.concurrency.reset()

    submission = enqueue_bulk(big.producer, {"site_code": "BS1"}, settings=big.settings)
    record = bulk_over(big, submission.bulk_id, timeout_s=240)

    assert record.state == "done" and record.total == expected
    assert record.package_classes == submission.package_classes == DEFAULT_PACKAGE_CLASSES
    assert sum(record.counts.values()) == expected and record.pending == 0 and record.outstanding == 0
    finals = children_finals(big, submission.bulk_id)
    assert len(finals) == expected and all(len(f) == 1 for f in finals.values())
    statuses = Counter(f[0].status for f in finals.values())
    assert statuses == Counter(record.counts)
    assert emulator.provider.call_totals()["accepted"] - accepted_before == statuses["accepted"]
    (outcome,) = bulk_outcomes(big, submission.bulk_id)
    assert outcome.state == "done" and outcome.total == expected and outcome.counts == record.counts
    # Two worker processes with 8 threads each, yet never more than the cap against the provider.
    assert 1 <= emulator.concurrency.peak() <= 6


def test_a_dry_run_counts_and_lists_packages_and_refreshes_nothing(big: Pipeline) -> None:
    """dry_run: the count and the first packages, no Invoke at all."""
    emulator = big.emulators["BS1"]
    invokes_before = emulator.provider.call_totals()["invokes"]
    criteria = {"site_code": "BS1", "package_classes": ["SMS_DriverPackage"], "name_pattern": "*"}
    submission = enqueue_bulk(big.producer, criteria, dry_run=True, settings=big.settings)
    record = bulk_over(big, submission.bulk_id, timeout_s=60)
    drivers = [p for p in emulator.provider.packages() if p["class"] == "SMS_DriverPackage"]
    assert record.dry_run and record.state == "done" and record.total == len(drivers)
    assert record.package_classes == ("SMS_DriverPackage",)
    assert [s["package_id"] for s in record.sample] == [p["PackageID"] for p in drivers][: len(record.sample)]
    assert emulator.provider.call_totals()["invokes"] == invokes_before
    assert children_finals(big, submission.bulk_id) == {}


def test_hostile_criteria_are_refused_before_anything_is_recorded(big: Pipeline) -> None:
    """Quotes, WQL keywords, control characters, 10 KB patterns, 100,000 ids: a clear error, no bulk."""
    hostile: list[dict[str, Any]] = [
        {"site_code": "BS1", "name_pattern": "x\x00y"},
        {"site_code": "BS1", "name_pattern": "a" * 10_000},
        {"site_code": "BS1", "package_ids": [f"BS1{i:05X}" for i in range(100_000)]},
        {"site_code": "BS1", "package_ids": ["BS100001' OR '1'='1"]},
        {"site_code": "BS1", "package_classes": ["Win32_Process"]},
        {"site_code": "BS1", "package_classes": ["SMS_ContentPackage"]},
        {"site_code": "BS1", "wql": "SELECT * FROM SMS_Package"},
        {"site_code": "BS1; DROP"},
    ]
    bulk_id = new_bulk_id()
    for criteria in hostile:
        with pytest.raises(InvalidRequestError) as raised:
            enqueue_bulk(big.producer, criteria, settings=big.settings, bulk_id=bulk_id)
        assert len(raised.value.message) < 1000
    assert get_bulk(big.settings, bulk_id) is None


def test_a_name_pattern_with_wql_characters_selects_only_literal_matches(big: Pipeline) -> None:
    """`%`, `_`, `[` and quotes in a pattern are literals: a dry run matches no package."""
    for pattern in ("100%", "a_b", "[abc]*", "' OR '1'='1", "*' OR Name LIKE '%"):
        submission = enqueue_bulk(
            big.producer, {"site_code": "BS1", "name_pattern": pattern}, dry_run=True, settings=big.settings
        )
        assert bulk_over(big, submission.bulk_id, timeout_s=60).total == 0, pattern


@pytest.fixture(scope="module")
def slow(pipeline_factory: PipelineFactory) -> Pipeline:
    """Provider latency, a cap of 2, short slot waits: a bulk that runs long enough to act on."""
    return pipeline_factory(
        emulator_overrides={"BS1": {"package_count": 300, "compress_share": 0.0, "latency_s": 0.05}},
        worker_extra_env={
            "SCCM_REFRESH_PROVIDERS__BS1__MAX_CONCURRENCY": "2",
            "SCCM_REFRESH_LIMITS__SLOT_WAIT_MIN_S": "0.05",
            "SCCM_REFRESH_LIMITS__SLOT_WAIT_MAX_S": "0.5",
            "SCCM_REFRESH_LIMITS__BULK_PUMP_INTERVAL_S": "1",
        },
        concurrency=6,
        worker_processes=2,
    )


def test_cancel_mid_bulk_leaves_no_child_unaccounted_for(slow: Pipeline) -> None:
    """Children not yet attempted end `cancelled`; running ones finish; the counts add up."""
    submission = enqueue_bulk(slow.producer, {"site_code": "BS1"}, settings=slow.settings)
    assert wait_until(lambda: len(children_finals(slow, submission.bulk_id)) >= 10, timeout_s=60)
    cancelled = cancel_bulk(slow.settings, submission.bulk_id, app=slow.producer)
    assert cancelled is not None and cancelled.state == "cancelled"
    record = bulk_over(slow, submission.bulk_id, timeout_s=90)

    finals = children_finals(slow, submission.bulk_id)
    assert record.total is not None and len(finals) == record.total
    assert all(len(f) == 1 for f in finals.values())
    statuses = Counter(f[0].status for f in finals.values())
    assert statuses["cancelled"] > 0 and statuses["accepted"] >= 10
    assert statuses == Counter(record.counts) and sum(record.counts.values()) == record.total
    (outcome,) = bulk_outcomes(slow, submission.bulk_id)
    assert outcome.state == "cancelled"


def test_an_urgent_request_during_a_bulk_starts_within_a_few_slot_turns(slow: Pipeline) -> None:
    """A single request outranks bulk children for a slot and queues behind a window, not the bulk."""
    submission = enqueue_bulk(slow.producer, {"site_code": "BS1"}, settings=slow.settings)
    assert wait_until(lambda: len(children_finals(slow, submission.bulk_id)) >= 20, timeout_s=60)
    urgent = slow.package("BS1", pkg_source_flag=PLAIN)
    finished_before = len(children_finals(slow, submission.bulk_id))
    run = slow.refresh(site_code="BS1", package_id=urgent["PackageID"], package_class=urgent["class"], timeout_s=30)
    finished_during = len(children_finals(slow, submission.bulk_id)) - finished_before
    assert run.final is not None and run.final.status == "accepted"
    # Two slots, a window of four children per slot: a handful of turns, not the ~280 children left.
    assert finished_during <= 20, finished_during
    cancel_bulk(slow.settings, submission.bulk_id, app=slow.producer)
    bulk_over(slow, submission.bulk_id, timeout_s=90)


def test_a_saturated_site_does_not_delay_another_sites_requests(slow: Pipeline) -> None:
    """BS1 busy with a bulk: a PS1 request ends as fast as on an idle system."""
    submission = enqueue_bulk(slow.producer, {"site_code": "BS1"}, settings=slow.settings)
    assert wait_until(lambda: len(children_finals(slow, submission.bulk_id)) >= 5, timeout_s=60)
    other = slow.package("PS1", pkg_source_flag=PLAIN)
    started = time.monotonic()
    run = slow.refresh(site_code="PS1", package_id=other["PackageID"], package_class=other["class"], timeout_s=20)
    took_s = time.monotonic() - started
    assert run.final is not None and run.final.status == "accepted"
    record = get_bulk(slow.settings, submission.bulk_id)
    assert record is not None and record.finished_at is None  # the bulk was still running meanwhile
    assert took_s < 5.0
    cancel_bulk(slow.settings, submission.bulk_id, app=slow.producer)
    bulk_over(slow, submission.bulk_id, timeout_s=90)


def test_the_emulator_never_sees_more_concurrent_operations_than_the_cap(slow: Pipeline) -> None:
    """Two worker processes, six threads each, latency so operations overlap: the peak is the cap."""
    emulator = slow.emulators["BS1"]
    emulator.concurrency.reset()
    submission = enqueue_bulk(
        slow.producer, {"site_code": "BS1", "package_classes": ["SMS_Package"]}, settings=slow.settings
    )
    bulk_over(slow, submission.bulk_id, timeout_s=120)
    assert emulator.concurrency.peak() == 2


def test_a_bulk_child_knows_its_package_and_refreshes_with_one_operation(slow: Pipeline) -> None:
    """The enumeration's properties ride along: the first attempt is one Invoke, no Get."""
    emulator = slow.emulators["BS1"]
    images = [p for p in emulator.provider.packages() if p["class"] == "SMS_ImagePackage"]
    packages = [p["PackageID"] for p in images if p["PkgSourceFlag"] == PLAIN]
    log_before = emulator.provider.call_log()["packages"]
    submission = enqueue_bulk(
        slow.producer,
        {"site_code": "BS1", "package_ids": packages, "package_classes": ["SMS_ImagePackage"]},
        settings=slow.settings,
    )
    record = bulk_over(slow, submission.bulk_id, timeout_s=60)
    assert record.total == len(packages) and record.counts == {"accepted": len(packages)}
    log_after = emulator.provider.call_log()["packages"]
    for package_id in packages:
        before, after = log_before.get(package_id, {}), log_after[package_id]
        assert after["invokes"] - before.get("invokes", 0) == 1
        assert after["gets"] - before.get("gets", 0) == 0
        assert child_request_id(submission.bulk_id, package_id) in pipeline_finals(slow)


def pipeline_finals(pipeline: Pipeline) -> set[str]:
    return set(pipeline.finals())


def test_hostile_correlation_ids_each_end_once_and_leave_a_running_bulks_counts_alone(slow: Pipeline) -> None:
    """Bulk-shaped ids, "PS1", "null", "NaN", a running bulk's own id: one final each; the bulk counts only its own."""
    emulator = slow.emulators["BS1"]
    submission = enqueue_bulk(slow.producer, {"site_code": "BS1"}, settings=slow.settings)
    bulk_id = submission.bulk_id
    assert wait_until(lambda: len(children_finals(slow, bulk_id)) >= 5, timeout_s=60)
    # Packages of a class the bulk does not select: refreshing them cannot pass for a child's work.
    outside = [
        p for p in emulator.provider.packages() if p["class"] == "SMS_ImagePackage" and p["PkgSourceFlag"] == PLAIN
    ]
    expected: dict[str, str] = {}
    for package, correlation_id in zip(outside, (new_bulk_id(), "PS1", "null", "NaN", bulk_id), strict=False):
        valid = {"site_code": "BS1", "package_id": package["PackageID"], "package_class": package["class"]}
        expected[slow.send({**valid, "correlation_id": correlation_id})] = "accepted"
        # The case: a PackageID that breaks its rule next to a bulk-shaped correlation id.
        expected[slow.send({**valid, "package_id": "not-a-package", "correlation_id": correlation_id})] = "rejected"
    # Request ids shaped like the running bulk's children, for packages it does not list.
    forged = outside[5]["PackageID"], outside[6]["PackageID"]
    fields = {"site_code": "BS1", "package_class": "SMS_ImagePackage", "correlation_id": bulk_id}
    expected[slow.send({**fields, "package_id": forged[0]}, request_id=child_request_id(bulk_id, forged[0]))] = (
        "accepted"
    )
    unconfigured = {**fields, "site_code": "ZZ9", "package_id": forged[1]}
    expected[slow.send(unconfigured, request_id=child_request_id(bulk_id, forged[1]))] = "rejected"

    assert wait_until(lambda: set(expected) <= set(slow.finals()), timeout_s=60)
    record = bulk_over(slow, bulk_id, timeout_s=120)

    finals = slow.finals()
    assert {rid: [f.status for f in finals[rid]] for rid in expected} == {rid: [s] for rid, s in expected.items()}
    selected = [p["PackageID"] for p in emulator.provider.packages() if p["class"] in DEFAULT_PACKAGE_CLASSES]
    children = {child_request_id(bulk_id, package_id) for package_id in selected}
    assert set(children_finals(slow, bulk_id)) == children | {child_request_id(bulk_id, pid) for pid in forged}
    assert all(len(finals[rid]) == 1 for rid in children)
    assert record.state == "done" and record.total == len(children) == sum(record.counts.values())
    assert Counter(record.counts) == Counter(finals[rid][0].status for rid in children)


def test_boot_images_refresh_one_at_a_time_within_the_sites_cap(slow: Pipeline) -> None:
    """A cap of 2 at the site and a dozen threads, yet never two boot image refreshes at once; each ends accepted."""
    emulator = slow.emulators["BS1"]
    boot = [
        p for p in emulator.provider.packages() if p["class"] == "SMS_BootImagePackage" and p["PkgSourceFlag"] == PLAIN
    ]
    assert len(boot) >= 3
    emulator.concurrency.reset()
    sent = [slow.send({"site_code": "BS1", "package_id": p["PackageID"], "package_class": p["class"]}) for p in boot]
    assert wait_until(lambda: set(sent) <= set(slow.finals()), timeout_s=60)
    finals = slow.finals()
    assert [[f.status for f in finals[rid]] for rid in sent] == [["accepted"]] * len(sent)
    assert emulator.concurrency.peak() == 1
