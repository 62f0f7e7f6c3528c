"""`SCCM_REFRESH_LOG_FORMAT=json`: the worker writes one JSON object per line, with the request's fields, and no secret.

A worker at DEBUG (the most talkative level) in JSON mode carries accepted refreshes over NTLM
and Basic, a wrong password, and a request retried after injected faults; its whole output is
then parsed line by line and searched for the test passwords in every encoding a leak would
take (testing/leak_search.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest

from testing.fixtures_pipeline import Pipeline, PipelineFactory, RefreshRun
from testing.leak_search import leak_report

pytestmark = pytest.mark.integration

REQUIRED_FIELDS: Final = {"time", "level", "logger", "message"}
JSON_ENV: Final = {"SCCM_REFRESH_LOG_FORMAT": "json"}


@dataclass
class JsonRun:
    pipeline: Pipeline
    runs: dict[str, RefreshRun]
    lines: list[str]

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def about(self, run: RefreshRun) -> list[dict[str, Any]]:
        return [entry for entry in self.entries() if entry.get("request_id") == run.request_id]


@pytest.fixture(scope="module")
def json_run(pipeline_factory: PipelineFactory) -> Iterator[JsonRun]:
    pipeline = pipeline_factory(worker_extra_env=JSON_ENV, worker_args=("--loglevel", "DEBUG"))
    ntlm = pipeline.package("PS1", pkg_source_flag=2)
    basic = pipeline.package("BS1", pkg_source_flag=2)
    runs = {
        "ntlm": pipeline.refresh(site_code="PS1", package_id=ntlm["PackageID"], package_class=ntlm["class"]),
        "basic": pipeline.refresh(site_code="BS1", package_id=basic["PackageID"], package_class=basic["class"]),
        "wrong_password": pipeline.refresh(site_code="XP1", package_id=ntlm["PackageID"], package_class=ntlm["class"]),
    }
    faults = pipeline.emulators["BS1"].faults
    for kind in ("http_503", "timeout_fault", "generic_failure"):
        faults.inject_next(kind)
    try:
        runs["retried"] = pipeline.refresh(
            site_code="BS1", package_id=basic["PackageID"], package_class=basic["class"], correlation_id="bulk-json-1"
        )
    finally:
        faults.clear()
    pipeline.worker.stop()  # the shutdown notices are part of the output too
    assert pipeline.worker.log_file is not None
    lines = [line for line in pipeline.worker.log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    yield JsonRun(pipeline, runs, lines)


def test_every_line_is_one_json_object_with_the_base_fields(json_run: JsonRun) -> None:
    """Start-up, DEBUG chatter, task lines, the shutdown notice: each is an object with time, level, logger, message."""
    assert len(json_run.lines) > 20
    for line in json_run.lines:
        entry = json.loads(line)
        assert isinstance(entry, dict) and set(entry) >= REQUIRED_FIELDS, line
    levels = {entry["level"] for entry in json_run.entries()}
    assert {"DEBUG", "INFO"} <= levels
    assert any("Warm shutdown" in entry["message"] for entry in json_run.entries())


def test_lines_logged_for_a_request_carry_its_fields(json_run: JsonRun) -> None:
    """Lines logged during a refresh name its request id, site, package id, attempt, and correlation id."""
    retried = json_run.runs["retried"]
    assert retried.final is not None and retried.final.status == "accepted"
    about = json_run.about(retried)
    assert about, "no line names the retried request"
    assert {entry["site"] for entry in about} == {"BS1"}
    assert {entry["package_id"] for entry in about} == {retried.final.package_id}
    assert {entry["correlation_id"] for entry in about} == {"bulk-json-1"}
    assert {entry["attempt"] for entry in about} >= {1, 2}
    assert all(entry.get("attempt") for entry in json_run.about(json_run.runs["ntlm"]))


def test_json_log_holds_no_secret(json_run: JsonRun) -> None:
    """The whole JSON output at DEBUG, wrong password included, names no secret in any encoding."""
    wrong = json_run.runs["wrong_password"]
    assert wrong.final is not None and wrong.final.error is not None and wrong.final.error["kind"] == "auth"
    assert json_run.about(wrong)
    assert leak_report({"worker JSON log": "\n".join(json_run.lines)}) == {}
