"""What scenarios send: valid refresh requests over the emulator's catalogue, and the sending.

Everything is drawn from a seeded `random.Random`, task ids included, so a seed names one run.
Each valid request targets its own package while the catalogue lasts (the accounting of
provider refreshes is per package), and carries a unique request id.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from chaos.report import Sent
from chaos.rig import SITE_CODE, Rig
from worker.app import REFRESH_TASK
from worker.domain.packages import REFUSED_CLASSES, TASK_SEQUENCE_CLASS

__all__ = [
    "STORAGE_COMPRESS",
    "STORAGE_DIRECT",
    "STORAGE_NO_SOURCE",
    "Outgoing",
    "PackagePool",
    "RawBody",
    "compress_mix",
    "new_task_id",
    "raw_headers",
    "send_all",
    "valid_kwargs",
    "valid_requests",
]

STORAGE_NO_SOURCE: Final = 1
STORAGE_DIRECT: Final = 2
STORAGE_COMPRESS: Final = 3


def new_task_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class RawBody:
    """A message published with kombu directly: our task's headers, any body, any content type."""

    body: bytes
    content_type: str = "application/json"
    minimal_headers: bool = False  # only `task` and `id`, as the scantiest foreign producer would


@dataclass(frozen=True)
class Outgoing:
    """One message to send: Celery kwargs, or a raw body; with what the accounting expects of it."""

    sent: Sent
    kwargs: Mapping[str, Any] | None = None
    raw: RawBody | None = None


class PackagePool:
    """Hands out catalogue packages, each once while the catalogue lasts, then round again."""

    def __init__(self, catalogue: Iterable[Mapping[str, Any]], rng: random.Random) -> None:
        self._packages = [dict(package) for package in catalogue]
        rng.shuffle(self._packages)
        self._used: set[str] = set()

    def take(
        self,
        *,
        task_sequence: bool | None = False,
        source_flags: tuple[int, ...] | None = (STORAGE_DIRECT,),
    ) -> dict[str, Any]:
        """An unused package matching the filters (None = any), else a used one."""

        def fits(package: Mapping[str, Any]) -> bool:
            is_ts = package["class"] == TASK_SEQUENCE_CLASS
            # A refused class (an application's content) is never a valid request's package.
            return (
                package["class"] not in REFUSED_CLASSES
                and (task_sequence is None or is_ts == task_sequence)
                and (source_flags is None or package["PkgSourceFlag"] in source_flags)
            )

        candidates = [package for package in self._packages if fits(package)]
        if not candidates:
            raise LookupError(f"no package with task_sequence={task_sequence} source_flags={source_flags}")
        fresh = [package for package in candidates if package["PackageID"] not in self._used]
        chosen = (fresh or candidates)[0]
        self._used.add(chosen["PackageID"])
        # Move it to the back: a second round reuses the least recently used first.
        self._packages.remove(chosen)
        self._packages.append(chosen)
        return chosen


def compress_mix(share: float) -> Callable[[PackagePool, random.Random], dict[str, Any]]:
    """A `valid_requests` pick: a STORAGE_COMPRESS package `share` of the time, else a STORAGE_DIRECT one."""

    def pick(pool: PackagePool, rng: random.Random) -> dict[str, Any]:
        flag = STORAGE_COMPRESS if rng.random() < share else STORAGE_DIRECT
        return pool.take(source_flags=(flag,))

    return pick


def valid_kwargs(package: Mapping[str, Any], *, request_id: str, verify: bool = False) -> dict[str, Any]:
    """A request the contract accepts (force only where it is required)."""
    kwargs: dict[str, Any] = {
        "site_code": SITE_CODE,
        "package_id": package["PackageID"],
        "package_class": package["class"],
        "request_id": request_id,
        "requested_at": datetime.now(UTC).isoformat(),
    }
    if package["class"] == TASK_SEQUENCE_CLASS:
        kwargs["force"] = True
    if verify:
        kwargs["verify"] = True
    return kwargs


def valid_requests(
    pool: PackagePool,
    rng: random.Random,
    count: int,
    *,
    label: str = "valid",
    verify_share: float = 0.0,
    pick: Callable[[PackagePool, random.Random], dict[str, Any]] | None = None,
) -> list[Outgoing]:
    """`count` valid requests, each on its own package (by `pick`, default any STORAGE_DIRECT one)."""
    outgoing = []
    for _ in range(count):
        package = pick(pool, rng) if pick is not None else pool.take()
        task_id = new_task_id(rng)
        kwargs = valid_kwargs(package, request_id=f"chaos-{task_id}", verify=rng.random() < verify_share)
        outgoing.append(Outgoing(Sent(task_id, label, valid=True, package_id=package["PackageID"]), kwargs=kwargs))
    return outgoing


def send_all(rig: Rig, outgoing: Sequence[Outgoing], *, interval_s: float = 0.0) -> float:
    """Send in order (paced when `interval_s` > 0); the wall-clock time of the first send."""
    first = time.time()
    for index, message in enumerate(outgoing):
        if index and interval_s > 0:
            time.sleep(interval_s)  # pacing the producer is the point, not a synchronisation
        if message.raw is not None:
            rig.publish_raw(
                message.raw.body,
                headers=raw_headers(message.sent.task_id, minimal=message.raw.minimal_headers),
                content_type=message.raw.content_type,
            )
        else:
            rig.send(message.kwargs or {}, task_id=message.sent.task_id)
    return first


def raw_headers(task_id: str, *, minimal: bool) -> dict[str, Any]:
    """Celery message protocol 2 headers naming our task, as a non-Python producer writes them."""
    if minimal:
        return {"task": REFRESH_TASK, "id": task_id}
    return {
        "lang": "js",
        "task": REFRESH_TASK,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "chaos",
    }
