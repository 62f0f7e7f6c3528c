"""A provider that never answers cannot hold an attempt past its bound (the soft time limit).

Celery's threads pool enforces no time limit: the attempt bounds itself. Here the soft limit is
3 s and the provider's read timeout 8 s; the emulator holds every operation (it answers nothing
until released). The attempt must end as a `timeout` by its 3 s, not wait out the read timeout,
and the request goes on (retried, then accepted once the provider answers again).
"""

from __future__ import annotations

import time
from typing import Final

import pytest

from testing.fixtures_emulator import EMULATOR_USERNAME
from testing.fixtures_pipeline import SHORT_VISIBILITY_ENV, Pipeline, PipelineFactory
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

SOFT_LIMIT_S: Final = float(SHORT_VISIBILITY_ENV["SCCM_REFRESH_TASK_SOFT_TIME_LIMIT_S"])
READ_TIMEOUT_S: Final = 8.0  # the pipeline's providers
# The delivery starts a moment after the send; the outcome needs a moment to be written and read.
SLACK_S: Final = 1.5


def test_an_attempt_at_a_provider_that_never_answers_ends_by_its_soft_time_limit(
    pipeline_factory: PipelineFactory,
) -> None:
    """Held Get: a `retrying` event of kind timeout within the 3 s bound, long before the 8 s read timeout."""
    pipeline = pipeline_factory(worker_extra_env=SHORT_VISIBILITY_ENV, concurrency=2)
    emulator = pipeline.emulators["BS1"]
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    with emulator.hold_operations():
        sent_at = time.monotonic()
        request_id = pipeline.send({"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]})
        assert emulator.wait_in_flight(EMULATOR_USERNAME, 1, timeout_s=10), pipeline.worker.output()[-3000:]
        assert wait_until(lambda: _events(pipeline, request_id) != [], timeout_s=READ_TIMEOUT_S)
        took_s = time.monotonic() - sent_at
        first = _events(pipeline, request_id)[0]
    assert first.status == "retrying" and first.error is not None, first.to_dict()
    assert first.error["kind"] == "timeout"
    assert took_s < SOFT_LIMIT_S + SLACK_S < READ_TIMEOUT_S

    # The provider answers again: the request carries on to its one final outcome.
    assert wait_until(lambda: request_id in pipeline.finals(), timeout_s=30), pipeline.worker.output()[-3000:]
    assert [final.status for final in pipeline.finals()[request_id]] == ["accepted"]


def _events(pipeline: Pipeline, request_id: str) -> list[Outcome]:
    return [outcome for outcome in pipeline.stream_outcomes() if outcome.request_id == request_id]
