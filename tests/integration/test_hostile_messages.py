"""Every message a producer can send gets exactly one final outcome, found by its task id.

Real Redis, a real `celery worker` process, the emulator; producers are a plain Celery client
(`send_task`, no validation) and raw kombu publishes of bodies Celery's own client would never
build. Each case is a triggering input of a defect that lost the message before.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from testing.fixtures_pipeline import Pipeline, PipelineFactory
from testing.waiting import wait_until
from worker.app import REFRESH_TASK
from worker.domain.outcomes import Outcome

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    """The shared pipeline, with a BS1 catalogue (seed 1) that holds a task sequence package."""
    return pipeline_factory(emulator_overrides={"BS1": {"seed": 1}})


def finals_of(pipeline: Pipeline, task_id: str) -> list[Outcome]:
    return [o for o in pipeline.stream_outcomes() if o.final and o.task_id == task_id]


def one_final(pipeline: Pipeline, task_id: str, timeout_s: float = 20.0) -> Outcome:
    assert wait_until(lambda: finals_of(pipeline, task_id) != [], timeout_s=timeout_s), f"no final for {task_id}"
    finals = finals_of(pipeline, task_id)
    assert len(finals) == 1, [f.to_dict() for f in finals]
    return finals[0]


def send(pipeline: Pipeline, kwargs: dict[str, Any]) -> str:
    task_id = str(uuid.uuid4())
    pipeline.producer.send_task(REFRESH_TASK, kwargs=kwargs, task_id=task_id, queue=pipeline.queue)
    return task_id


def send_raw(pipeline: Pipeline, body: bytes, *, content_type: str = "application/json") -> str:
    """Publish a task message the way any Celery-protocol producer could, body bytes as given."""
    task_id = str(uuid.uuid4())
    app = pipeline.producer
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        producer.publish(
            body,
            exchange=pipeline.queue,
            routing_key=pipeline.queue,
            headers={"lang": "py", "task": REFRESH_TASK, "id": task_id, "root_id": task_id},
            content_type=content_type,
            content_encoding="utf-8",
            declare=[],
            retry=True,
        )
    return task_id


def plain_package(pipeline: Pipeline) -> dict[str, Any]:
    pkg = pipeline.package("BS1", pkg_source_flag=2)
    return {"site_code": "BS1", "package_id": pkg["PackageID"], "package_class": pkg["class"]}


@pytest.mark.parametrize("field", ["correlation_id", "site_code", "package_id", "request_id", "package_class"])
def test_a_lone_surrogate_in_any_string_ends_in_one_rejection(pipeline: Pipeline, field: str) -> None:
    """`"c\\udc80"` used to fail the publication itself: now it is one rejected outcome."""
    task_id = send(pipeline, {**plain_package(pipeline), field: "c\udc80"})
    final = one_final(pipeline, task_id)
    assert final.status == "rejected"
    assert "c\udc80" not in final.to_json() and final.to_json().encode("utf-8")
    assert "c\udc80" not in pipeline.worker.output()


def test_a_kwarg_named_self_ends_in_one_rejection(pipeline: Pipeline) -> None:
    """A kwarg named `self` used to break the call before the task body ran."""
    final = one_final(pipeline, send(pipeline, {**plain_package(pipeline), "self": "x"}))
    assert final.status == "rejected" and final.error is not None
    assert "self: unknown field" in final.error["message"]


@pytest.mark.parametrize("depth", [960, 100_000])
def test_a_dict_nested_deep_under_an_extra_key_ends_in_one_rejection(pipeline: Pipeline, depth: int) -> None:
    """kombu's decoder hits its recursion limit (about 960 levels here): the message used to be dropped."""
    kwargs = json.dumps(plain_package(pipeline))[:-1] + ', "extra": ' + '{"d":' * depth + "1" + "}" * depth + "}"
    final = one_final(pipeline, send_raw(pipeline, f"[[], {kwargs}, {{}}]".encode()))
    assert final.status == "rejected" and final.error is not None
    assert "could not be decoded" in final.error["message"] or "extra: unknown field" in final.error["message"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"not": "a list"}', "not a Celery protocol 2 call"),
        (b'[[], ["site_code", "PS1"], {}]', "keyword arguments are not a JSON object"),
        (b'["PS1", {}, {}]', "positional arguments are not a JSON array"),
        (b"[[], {], {}]", "could not be decoded"),
    ],
)
def test_a_malformed_raw_message_ends_in_one_rejection(pipeline: Pipeline, body: bytes, why: str) -> None:
    """Bodies Celery cannot hand to the task are answered, not dropped."""
    final = one_final(pipeline, send_raw(pipeline, body))
    assert final.status == "rejected" and final.error is not None and why in final.error["message"]


def test_a_rejected_long_request_id_is_recorded_whole(pipeline: Pipeline) -> None:
    """A valid 100-character request id is the key of its rejection, not its first 64 characters."""
    request_id = "r" + uuid.uuid4().hex * 3 + "x" * 3
    assert len(request_id) == 100
    final = one_final(pipeline, send(pipeline, {**plain_package(pipeline), "request_id": request_id, "verify": "no"}))
    assert final.status == "rejected" and final.request_id == request_id


def test_two_rejected_ids_sharing_their_first_64_characters_each_get_their_rejection(pipeline: Pipeline) -> None:
    """Ids once cut to 64 characters collided: the second rejection was dropped as already final."""
    prefix = "r" + uuid.uuid4().hex * 2
    prefix += "p" * (64 - len(prefix))
    ids = [f"{prefix}-first", f"{prefix}-second"]
    finals = [
        one_final(pipeline, send(pipeline, {**plain_package(pipeline), "request_id": rid, "verify": "no"}))
        for rid in ids
    ]
    assert [(f.status, f.request_id) for f in finals] == [("rejected", rid) for rid in ids]


def test_ids_that_break_the_rule_are_not_echoed(pipeline: Pipeline) -> None:
    """Path-like, JNDI, bidi and ANSI ids: the rejection is keyed by the task id and echoes none."""
    for hostile in ("../../etc/passwd", "${jndi:ldap://evil/a}", "abc\u202eevil", "\x1b[31mred\x1b[0m"):
        task_id = send(pipeline, {**plain_package(pipeline), "request_id": hostile, "correlation_id": hostile})
        final = one_final(pipeline, task_id)
        assert final.request_id == task_id and final.correlation_id is None
        assert hostile not in final.to_json()


def test_a_fixed_request_resent_under_the_same_id_is_refreshed(pipeline: Pipeline) -> None:
    """A rejection answers its message; it does not block the corrected request for 7 days."""
    request_id = f"fix-{uuid.uuid4().hex}"
    base = {**plain_package(pipeline), "request_id": request_id}
    rejected = one_final(pipeline, send(pipeline, {**base, "verify": "yes"}))
    assert rejected.status == "rejected" and rejected.request_id == request_id
    refreshed = one_final(pipeline, send(pipeline, base))
    assert refreshed.status == "accepted" and refreshed.request_id == request_id


def test_force_yes_never_refreshes_a_task_sequence(pipeline: Pipeline) -> None:
    """`force: "yes"` is not a boolean: the task sequence package is not touched."""
    provider = pipeline.emulators["BS1"].provider
    ts = next(p for p in provider.packages() if p["class"] == "SMS_TaskSequencePackage")
    before = provider.call_log()["packages"].get(ts["PackageID"], {}).get("invokes", 0)
    for force in ("yes", "true", 1):
        kwargs = {"site_code": "BS1", "package_id": ts["PackageID"], "package_class": ts["class"], "force": force}
        assert one_final(pipeline, send(pipeline, kwargs)).status == "rejected"
    assert provider.call_log()["packages"].get(ts["PackageID"], {}).get("invokes", 0) == before


def test_hostile_messages_leave_no_traceback_with_their_content_in_the_log(pipeline: Pipeline) -> None:
    """The worker's log names what was wrong, never the message's content."""
    marker = f"leak-{uuid.uuid4().hex}"
    one_final(pipeline, send(pipeline, {**plain_package(pipeline), "self": marker, "c\udc80": marker}))
    one_final(pipeline, send_raw(pipeline, json.dumps([[marker], {}, {}]).encode()))
    assert marker not in pipeline.worker.output()
