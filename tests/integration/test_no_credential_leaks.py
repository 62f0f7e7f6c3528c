"""The acceptance line "a grep of Redis, logs and Flower-visible task data after the suite finds no password".

One pipeline (worker at DEBUG, the most talkative level) and a real Flower watching it carry a
representative mix of requests: accepted over NTLM and Basic, not found, access denied, a wrong
password, injected 503 / timeout / generic failures, a medium that is not ready (retried, then
accepted), a rejected request and a site whose password file is missing. Then every place a
secret could land is searched for both test passwords in each encoding a leak would take: raw,
UTF-16LE, base64 and URL-safe base64 at every byte alignment, and the Basic `Authorization`
value; also for NTLM AUTHENTICATE messages, which are not the password but crack to it offline
(pyspnego logs them at DEBUG: worker/provider/transport.py keeps that logger at INFO). Redis is read key
by key, every type, in every database, with Celery message bodies and result-backend records
decoded. Flower (`sccm-refresh flower`) is read with its login, /metrics included.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME
from testing.fixtures_pipeline import WRONG_PASSWORD, Pipeline, PipelineFactory, RefreshRun
from testing.flower_process import FLOWER_USER, FlowerProcess
from testing.leak_search import (
    NTLM_AUTHENTICATE_SIGNATURE,
    LeakSearch,
    RedisSnapshot,
    basic_authorization,
    database_count,
    redis_for_db,
    snapshot_redis,
)
from testing.waiting import wait_until
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration

SECRETS: Final = {"EMULATOR_PASSWORD": EMULATOR_PASSWORD, "WRONG_PASSWORD": WRONG_PASSWORD}
SEARCH: Final = LeakSearch.for_secrets(SECRETS, username=EMULATOR_USERNAME)
# Written to the last database before the search: proves every database is read, not just db 0.
CANARY_KEY: Final = "leak-search-canary"

# A site whose password file does not exist: its error names the path, never a secret.
MISSING_FILE_SITE: Final = "MF1"
MISSING_FILE_NAME: Final = "no-such-password-file"
# Never contacted: the password file is read (and fails) before any connection is made.
UNREACHABLE_ENDPOINT: Final = "http://127.0.0.1:9/wsman"

# The parked request keeps waiting for its medium while the rest of the traffic runs.
LEAK_ENV: Final = {"SCCM_REFRESH_RETRY__MEDIUM__MAX_ATTEMPTS": "200"}
WORKER_DEBUG_ARGS: Final = ("--loglevel", "DEBUG")


def leaks_in(blob: bytes | str) -> set[str]:
    return SEARCH.leaks_in(blob)


def leak_report(blobs: Mapping[str, bytes | str]) -> dict[str, set[str]]:
    return SEARCH.report(blobs)


def plant_canary(url: str) -> int:
    """Write the canary key into the last database; returns that database's number."""
    last = database_count(url) - 1
    client = redis_for_db(url, last)
    try:
        client.set(CANARY_KEY, "not a secret")
    finally:
        client.close()
    return last


# -- the traffic ----------------------------------------------------------------------------


@dataclass
class Traffic:
    """What the mix produced, and everything collected from Redis, the worker and Flower."""

    pipeline: Pipeline
    flower: FlowerProcess
    runs: dict[str, RefreshRun]
    missing_password_file: Path
    canary_db: int
    redis_while_waiting: RedisSnapshot
    redis_after: RedisSnapshot
    flower_tasks: dict[str, Any]
    flower_responses: dict[str, str]
    flower_unauthenticated: dict[str, int]

    @property
    def request_ids(self) -> set[str]:
        return {run.request_id for run in self.runs.values()}


@pytest.fixture(scope="module")
def traffic(pipeline_factory: PipelineFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """Drive the mix through a DEBUG worker watched by Flower; collect all three places to search."""
    tmp = tmp_path_factory.mktemp("leaks")
    missing = tmp / MISSING_FILE_NAME
    prefix = f"SCCM_REFRESH_PROVIDERS__{MISSING_FILE_SITE}__"
    missing_site_env = {
        f"{prefix}ENDPOINT": UNREACHABLE_ENDPOINT,
        f"{prefix}TRANSPORT": "ntlm",
        f"{prefix}USERNAME": EMULATOR_USERNAME,
        f"{prefix}PASSWORD_FILE": str(missing),
    }
    pipeline = pipeline_factory(worker_extra_env={**LEAK_ENV, **missing_site_env}, worker_args=WORKER_DEBUG_ARGS)
    flower = FlowerProcess(pipeline.worker.env, log_file=tmp / "flower.log", auth_file=tmp / "flower-auth").start()
    try:
        yield drive_traffic(pipeline, flower, missing)
    finally:
        flower.stop()


def drive_traffic(pipeline: Pipeline, flower: FlowerProcess, missing: Path) -> Traffic:
    runs: dict[str, RefreshRun] = {}
    canary_db = plant_canary(pipeline.redis_url)
    ps1, bs1 = pipeline.emulators["PS1"], pipeline.emulators["BS1"]
    parked = pipeline.package("PS1", pkg_source_flag=3, medium_ready=False)
    ps1.provider.set_medium_ready(parked["PackageID"], False)
    parked_id = f"req-parked-{uuid.uuid4().hex}"
    first_retry = threading.Event()

    def on_parked_event(outcome: Outcome) -> None:
        if outcome.status == "retrying":
            first_retry.set()

    with ThreadPoolExecutor(max_workers=1) as background:
        waiting = background.submit(
            pipeline.refresh,
            site_code="PS1",
            package_id=parked["PackageID"],
            package_class=parked["class"],
            on_event=on_parked_event,
            request_id=parked_id,
        )
        assert first_retry.wait(timeout=10), "the medium request never reported retrying"

        plain_ps1 = pipeline.package("PS1", pkg_source_flag=2)
        denied = pipeline.package("PS1", pkg_source_flag=2, exclude=(plain_ps1["PackageID"],))
        plain_bs1 = pipeline.package("BS1", pkg_source_flag=2)

        runs["ntlm_accepted"] = pipeline.refresh(
            site_code="PS1", package_id=plain_ps1["PackageID"], package_class=plain_ps1["class"], verify=True
        )
        runs["basic_accepted"] = pipeline.refresh(
            site_code="BS1", package_id=plain_bs1["PackageID"], package_class=plain_bs1["class"]
        )
        runs["not_found"] = pipeline.refresh(site_code="PS1", package_id="PS1FFFFF", package_class="SMS_Package")
        ps1.provider.deny_access(denied["PackageID"])
        try:
            runs["access_denied"] = pipeline.refresh(
                site_code="PS1", package_id=denied["PackageID"], package_class=denied["class"]
            )
        finally:
            ps1.provider.allow_access(denied["PackageID"])
        runs["wrong_password"] = pipeline.refresh(
            site_code="XP1", package_id=plain_ps1["PackageID"], package_class=plain_ps1["class"]
        )
        # Three faults exhaust the in-call budget of one run: re-queued, then accepted.
        for kind in ("http_503", "timeout_fault", "generic_failure"):
            bs1.faults.inject_next(kind)
        try:
            runs["faults_then_accepted"] = pipeline.refresh(
                site_code="BS1", package_id=plain_bs1["PackageID"], package_class=plain_bs1["class"]
            )
        finally:
            bs1.faults.clear()
        runs["rejected"] = pipeline.refresh(
            site_code="PS1", package_id="PS100001", package_class="SMS_TaskSequencePackage"
        )
        runs["missing_password_file"] = pipeline.refresh(
            site_code=MISSING_FILE_SITE, package_id="MF100001", package_class="SMS_Package"
        )

        # While the medium request waits, its retry message sits in the broker: catch it there.
        while_waiting = RedisSnapshot()

        def parked_message_seen() -> bool:
            nonlocal while_waiting
            while_waiting = snapshot_redis(pipeline.redis_url)
            return any(
                kw.get("request_id") == parked_id and kw.get("retry_state") for kw in while_waiting.message_kwargs
            )

        assert wait_until(parked_message_seen, timeout_s=10), "the waiting request's message never showed in Redis"
        ps1.provider.set_medium_ready(parked["PackageID"], True)
        runs["medium_retried_then_accepted"] = waiting.result(timeout=30)

    request_ids = {run.request_id for run in runs.values()}
    flower_tasks: dict[str, Any] = {}

    def flower_saw_every_request() -> bool:
        nonlocal flower_tasks
        flower_tasks = flower.api("/api/tasks").json()
        return all(flower_tasks.get(rid, {}).get("state") == "SUCCESS" for rid in request_ids)

    assert wait_until(flower_saw_every_request, timeout_s=15), f"Flower saw: {sorted(flower_tasks)}"
    responses = {"/api/tasks": flower.api("/api/tasks").text}
    for rid in sorted(request_ids):
        # (No /api/task/result: there is no result backend, the outcome stream is the record.)
        responses[f"/api/task/info/{rid}"] = flower.api(f"/api/task/info/{rid}").text
    responses["/api/workers?refresh=1"] = flower.api("/api/workers?refresh=1").text
    responses["/metrics"] = flower.api("/metrics").text
    responses["flower log"] = flower.log_text()
    some_task = sorted(request_ids)[0]
    unauthenticated = {
        path: flower.get(path).status_code
        for path in ("/api/tasks", f"/api/task/info/{some_task}", "/api/workers", "/api/queues/length", "/metrics")
    }
    unauthenticated["/api/tasks (wrong login)"] = flower.get("/api/tasks", auth=(FLOWER_USER, "wrong")).status_code
    return Traffic(
        pipeline=pipeline,
        flower=flower,
        runs=runs,
        missing_password_file=missing,
        canary_db=canary_db,
        redis_while_waiting=while_waiting,
        redis_after=snapshot_redis(pipeline.redis_url),
        flower_tasks=flower_tasks,
        flower_responses=responses,
        flower_unauthenticated=unauthenticated,
    )


# -- the tests ------------------------------------------------------------------------------


def test_leak_finder_catches_every_encoding_it_claims() -> None:
    """The search is not vacuous: a secret hidden in each encoding, at each alignment, is found."""
    for secret in SECRETS.values():
        for prefix in ("", "x", "xy"):
            embedded = f'{{"note": "{prefix}{secret}!"}}'.encode()
            assert leaks_in(embedded)
            assert leaks_in(base64.b64encode(embedded))
            assert leaks_in(base64.urlsafe_b64encode(embedded))
            assert leaks_in(base64.b64encode(embedded.decode().encode("utf-16-le")))
            assert leaks_in(json.dumps({"body": base64.b64encode(embedded).decode()}))
        header = b"Authorization: Basic " + basic_authorization(EMULATOR_USERNAME, secret)
        assert leaks_in(header)
    authenticate = NTLM_AUTHENTICATE_SIGNATURE + b"\x18\x00" * 8
    assert leaks_in(b"NTLM step output: " + base64.b64encode(authenticate))
    assert not leaks_in(f"cannot read password_file '/tmp/{MISSING_FILE_NAME}'")


def test_the_mix_reaches_every_intended_outcome(traffic: Traffic) -> None:
    """Each request of the mix ended where it should, so the search covers every path."""
    expected = {
        "ntlm_accepted": ("source_updated", None),
        "basic_accepted": ("accepted", None),
        "not_found": ("failed", "not_found"),
        "access_denied": ("failed", "access_denied"),
        "wrong_password": ("failed", "auth"),
        "faults_then_accepted": ("accepted", None),
        "rejected": ("rejected", "invalid_request"),
        "missing_password_file": ("failed", "config"),
        "medium_retried_then_accepted": ("accepted", None),
    }
    seen = {
        name: (
            run.final.status if run.final else None,
            run.final.error["kind"] if run.final and run.final.error else None,
        )
        for name, run in traffic.runs.items()
    }
    assert seen == expected
    assert traffic.runs["faults_then_accepted"].statuses[0] == "retrying"
    assert "retrying" in traffic.runs["medium_retried_then_accepted"].statuses


def test_redis_holds_no_secret_in_any_key_of_any_type(traffic: Traffic) -> None:
    """Every key in every database, while a request waits and after the suite, is free of secrets."""
    for snapshot in (traffic.redis_while_waiting, traffic.redis_after):
        assert leak_report(snapshot.blobs) == {}
        assert CANARY_KEY.encode() in snapshot.keys_by_db[traffic.canary_db]
    # Not vacuous: the outcome stream, state hashes, markers, kombu's bindings and unacked index
    # were all read, and Celery messages were decoded from base64.
    assert {"stream", "hash", "string", "set", "zset"} <= set(traffic.redis_while_waiting.types)
    assert traffic.redis_while_waiting.message_kwargs
    # No result backend: Celery keeps no second copy of kwargs or results (celery-task-meta-*).
    assert traffic.redis_after.results == {}


def test_worker_debug_log_holds_no_secret(traffic: Traffic) -> None:
    """The worker's whole output, at DEBUG, names no secret in any encoding."""
    worker = traffic.pipeline.worker
    assert worker.log_file is not None
    log_text = worker.log_file.read_text(encoding="utf-8")
    assert " DEBUG" in log_text or "DEBUG/" in log_text, "the worker did not run at DEBUG"
    assert all(rid in log_text for rid in traffic.request_ids)
    assert leak_report({"worker log file": log_text, "worker output": worker.output()}) == {}


def test_flower_task_data_holds_no_secret(traffic: Traffic) -> None:
    """Flower's task list, task details, results, workers and metrics name no secret."""
    assert traffic.request_ids <= set(traffic.flower_tasks)
    wrong_password = traffic.flower_tasks[traffic.runs["wrong_password"].request_id]
    assert "XP1" in wrong_password["kwargs"] and "auth" in wrong_password["result"]
    assert leak_report(traffic.flower_responses) == {}


def test_flower_api_refuses_requests_without_its_login(traffic: Traffic) -> None:
    """Without (or with a wrong) basic-auth login, Flower's API answers 401."""
    assert traffic.flower_unauthenticated == dict.fromkeys(traffic.flower_unauthenticated, 401)


def test_wrong_password_outcome_carries_no_secret(traffic: Traffic) -> None:
    """The auth failure says the credentials were rejected, and nothing in it holds a password."""
    run = traffic.runs["wrong_password"]
    assert run.final is not None and run.final.error is not None
    assert "401" in run.final.error["message"]
    assert (
        leak_report({"live": run.final.to_json(), **{f"stream #{i}": o.to_json() for i, o in enumerate(run.stream)}})
        == {}
    )


def test_missing_password_file_is_named_but_no_secret_is(traffic: Traffic) -> None:
    """A configuration error may name the password file's path; the message still holds no secret."""
    run = traffic.runs["missing_password_file"]
    assert run.final is not None and run.final.error is not None
    message = run.final.error["message"]
    assert str(traffic.missing_password_file) in message
    assert leak_report({"message": message, "outcome": run.final.to_json()}) == {}
    # The real password files' paths may show in configuration, never their contents.
    for path in traffic.pipeline.password_files.values():
        assert not leaks_in(str(path))
