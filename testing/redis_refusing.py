"""A Redis that refuses writes for a while, each way a real one does (besides being full: testing/redis_full.py).

    with refusing_writes(client, "readonly", data_dir):   # every write answered READONLY until the block ends
        ...

- "readonly": the server is made a replica of a master that does not answer (REPLICAOF a closed
  port), as during a failover: writes get READONLY. It keeps its data (it never syncs), and
  `REPLICAOF NO ONE` makes it a primary again.
- "noreplicas": `min-replicas-to-write 1` with no replica: writes get NOREPLICAS.
- "misconf": RDB snapshots on with `stop-writes-on-bgsave-error yes`, and the last save failed
  (a directory sits where the snapshot file must go, so the rename ends in EISDIR, root or
  not): writes get MISCONF. Leaving the block removes the obstacle and saves again, as an
  operator who freed the disk would, then turns snapshots off again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

__all__ = ["REFUSALS", "Refusal", "refusing_writes"]

Refusal = Literal["readonly", "noreplicas", "misconf"]
REFUSALS: Final[tuple[Refusal, ...]] = ("readonly", "noreplicas", "misconf")

_SNAPSHOT_FILE: Final = "dump.rdb"
_SAVE_TIMEOUT_S: Final = 10.0
_POLL_S: Final = 0.05


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released: a replica's connection is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_save(client: Any, status: str) -> None:
    deadline = time.monotonic() + _SAVE_TIMEOUT_S
    while time.monotonic() < deadline:
        persistence = client.info("persistence")
        if not persistence["rdb_bgsave_in_progress"] and persistence["rdb_last_bgsave_status"] == status:
            return
        time.sleep(_POLL_S)  # a child process of the server: no event to await
    raise AssertionError(f"the snapshot did not end {status!r} within {_SAVE_TIMEOUT_S} s")


def _save(client: Any, status: str) -> None:
    _wait_for_save(client, client.info("persistence")["rdb_last_bgsave_status"])  # none in progress
    client.bgsave()
    _wait_for_save(client, status)


@contextmanager
def refusing_writes(client: Any, refusal: Refusal, data_dir: Path) -> Iterator[None]:
    """The server (`client` is an admin connection to it; `data_dir` its directory) refuses writes in the block."""
    if refusal == "readonly":
        client.execute_command("REPLICAOF", "127.0.0.1", str(_closed_port()))
    elif refusal == "noreplicas":
        client.config_set("min-replicas-to-write", 1)
    else:
        obstacle = data_dir / _SNAPSHOT_FILE
        client.config_set("save", "3600 1")
        client.config_set("stop-writes-on-bgsave-error", "yes")
        obstacle.mkdir()
        _save(client, "err")
    try:
        yield
    finally:
        if refusal == "readonly":
            client.execute_command("REPLICAOF", "NO", "ONE")
        elif refusal == "noreplicas":
            client.config_set("min-replicas-to-write", 0)
        else:
            obstacle.rmdir()
            _save(client, "ok")
            client.config_set("save", "")
