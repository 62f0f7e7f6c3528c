"""What a scenario is, and the steps every pipeline scenario ends with.

A scenario is a name, its promise in one sentence, and a `run(options) -> Row`. Pipeline
scenarios open a `Rig`, send, drain, then `finish()`: the common accounting (chaos.report),
plus the after-run search for the emulator's password in every Redis key and value, the
worker logs and (when it ran) Flower's answers (testing.leak_search, shared with the
no-credential-leak test).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from chaos.report import Check, FinalRecord, Row, Sent, tally
from chaos.rig import USERNAME, Rig, RigConfig
from testing.leak_search import LeakSearch

__all__ = ["LEAK_CHECK", "Disruptor", "RunOptions", "Scenario", "catalogue_size", "finish", "leak_check", "rig_config"]

LEAK_CHECK: Final = "no password in Redis, worker logs or Flower"
_REPORTED_PLACES: Final = 5


@dataclass(frozen=True)
class RunOptions:
    requests: int
    seed: int
    workdir: Path
    flower: bool = True  # a real Flower watches the workers; its answers are searched for the password
    bulk_size: int = 1000  # packages in the bulk of `bulk-kill`
    # How the workers authenticate: NTLM, or Kerberos against a KDC of the rig's own (docs/kerberos.md).
    auth: Literal["ntlm", "kerberos"] = "ntlm"


@dataclass(frozen=True)
class Scenario:
    name: str
    promise: str
    run: Callable[[RunOptions], Row]


def catalogue_size(requests: int) -> int:
    """Enough packages for one per request, with room for the classes scenarios look for."""
    return max(80, requests + requests // 4)


def rig_config(options: RunOptions, *, worker_env: Mapping[str, str] | None = None, **emulator: Any) -> RigConfig:
    """The pipeline of a scenario: a catalogue sized for its requests, plus its emulator settings."""
    return RigConfig(
        emulator={"package_count": catalogue_size(options.requests), **emulator},
        worker_env=dict(worker_env or {}),
        flower=options.flower,
        auth=options.auth,
    )


class Disruptor:
    """A scenario's disruption (kills, restarts) on its own thread, alongside the sending.

    An exception in it becomes `error`, reported as a failed check: never a traceback.
    """

    def __init__(self, name: str, action: Callable[[], None]) -> None:
        self.error: str | None = None
        self._action = action
        self._thread = threading.Thread(target=self._run, name=f"chaos-{name}", daemon=True)

    def _run(self) -> None:
        try:
            self._action()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self) -> Disruptor:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive() and self.error is None:
            self.error = f"still running after {timeout_s:.0f} s"


def leak_check(
    secrets: Mapping[str, str],
    blobs: Mapping[str, bytes | str],
    *,
    username: str = USERNAME,
    what: str = LEAK_CHECK,
) -> Check:
    """A check that no secret (in any encoding testing.leak_search knows) is in any blob."""
    found = LeakSearch.for_secrets(secrets, username=username).report(blobs)
    places = ", ".join(f"{where}: {sorted(labels)}" for where, labels in list(found.items())[:_REPORTED_PLACES])
    return Check(what, not found, f"found in {len(found)} place(s): {places}" if found else f"{len(blobs)} blobs")


def finish(
    rig: Rig,
    scenario: str,
    sent: Sequence[Sent],
    *,
    first_send_epoch_s: float,
    fault_ended_epoch_s: float | None = None,
    finals: Sequence[FinalRecord] | None = None,
    checks: Sequence[Check] = (),
    details: Mapping[str, Any] | None = None,
) -> Row:
    """The scenario's row, read after the drain: ledger, provider call log, leak search.

    Lateness counts from `fault_ended_epoch_s` (when the last fault ended) or the last send,
    whichever came later. `finals` replaces the ledger's (a bulk's children are matched by
    request id).
    """
    ledger = rig.ledger
    running = [worker.alive() for worker in rig.workers]
    # A consumer that stopped on an error it took for unrecoverable can leave its process alive
    # (a warm shutdown waits for its running tasks): alive is not enough.
    stopped = rig.consumers_stopped()
    all_checks = [
        *checks,
        Check(
            "no worker crashed",
            all(running) and rig.crash_restarts == 0 and not stopped,
            f"running at the end: {running}; restarted after dying: {rig.crash_restarts} time(s)"
            + "".join(f"; {name} stopped consuming: {line}" for name, line in stopped.items()),
        ),
        leak_check({"EMULATOR_PASSWORD": rig.password}, rig.evidence()),
    ]
    return tally(
        scenario,
        sent,
        ledger.finals if finals is None else finals,
        rig.accepted_refreshes(),
        first_send_epoch_s=first_send_epoch_s,
        lateness_from_epoch_s=max(fault_ended_epoch_s or 0.0, rig.last_send_epoch_s),
        checks=all_checks,
        details={"stream_entries": ledger.entries, "malformed_stream_entries": ledger.malformed, **(details or {})},
    )
