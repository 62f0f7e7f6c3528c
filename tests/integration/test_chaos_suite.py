"""The chaos suite at a small size: each scenario keeps its promise (`make chaos` runs them at 300+).

Each test runs one scenario of chaos/ for real (own redis-server, emulator, two celery workers
with the shipped settings; the API for the bulk; the hostile WS-Man server and a client process
for hostile XML) and asserts its row: 0 lost, 0 duplicate finals, 0 extra provider refreshes,
every final within the lateness bound and the scenario's own checks. Scenarios that today's
code fails are marked xfail(strict=True) with the defect: remove the mark with the fix.

Three scenarios run in `make chaos` only: worker-sigstop (its freeze alone is 45 s),
redis-maxmemory (a 20 s outage; its lateness after the lift is still over the bound, see
docs/chaos.md) and bulk-kill (meaningful at a bulk of 1,000, about a minute and a half).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, Literal

import pytest

from chaos.hostile_replies import KINDS
from chaos.report import Row, format_row
from chaos.scenario import RunOptions
from chaos.scenarios import SCENARIOS
from testing.fixtures_kdc import require_kerberos

pytestmark = pytest.mark.integration

SMALL: Final = 40
SEED: Final = 7


# Every kind of hostile reply twice over: the first round meets each kind once.
XML_REPLIES: Final = 2 * len(KINDS)


def run_scenario(
    name: str, workdir: Path, *, requests: int = SMALL, flower: bool = False, auth: Literal["ntlm", "kerberos"] = "ntlm"
) -> Row:
    options = RunOptions(requests=requests, seed=SEED, workdir=workdir, flower=flower, auth=auth)
    return SCENARIOS[name].run(options)


def explain(row: Row) -> str:
    return f"{format_row(row)}\n{json.dumps(row.details, default=str)[:3000]}"


def test_baseline_requests_end_once_and_refresh_once(tmp_path: Path) -> None:
    """Valid requests over NTLM (every class, media becoming ready) end once and refresh once; Flower watching."""
    row = run_scenario("baseline", tmp_path, flower=True)
    assert row.requests == SMALL and row.ok, explain(row)


def test_worker_sigkill_mid_exchange_loses_nothing_and_refreshes_once(tmp_path: Path) -> None:
    """A worker SIGKILLed twice mid-exchange: nothing lost, one final each, no package refreshed twice."""
    row = run_scenario("worker-sigkill", tmp_path)
    assert row.ok, explain(row)


def test_redis_restart_mid_run_loses_nothing_and_workers_survive(tmp_path: Path) -> None:
    """Redis shut down and restarted mid-run (AOF, fsync always): nothing lost, no duplicate, both workers live on."""
    row = run_scenario("redis-restart", tmp_path)
    assert row.ok, explain(row)


def test_provider_fault_mix_loses_nothing_and_refreshes_once(tmp_path: Path) -> None:
    """503s, resets, w:TimedOut, quota, idle closes, slow replies, media becoming ready: one final, one refresh."""
    row = run_scenario("provider-faults", tmp_path)
    assert row.ok, explain(row)


def test_provider_fault_mix_over_kerberos_loses_nothing_and_refreshes_once(tmp_path: Path) -> None:
    """The same mix with the workers on Kerberos (a KDC of the rig's own, a keytab): every reset and
    idle close means a new Kerberos handshake, and the promise holds."""
    require_kerberos()
    row = run_scenario("provider-faults", tmp_path, auth="kerberos")
    assert row.ok, explain(row)


def test_a_lost_invoke_while_an_older_refresh_is_pending_is_invoked_again(tmp_path: Path) -> None:
    """The fence's counter-example: B's Invoke lost while A's refresh of P is pending; B invokes again, accepted."""
    row = run_scenario("fence-counter-example", tmp_path)
    assert row.ok, explain(row)


def test_hostile_kwargs_each_get_one_final_and_only_valid_ones_refresh(tmp_path: Path) -> None:
    """Every hostile message naming our task gets exactly one final; no coerced force; fixed resends refresh."""
    row = run_scenario("hostile-kwargs", tmp_path)
    assert row.ok, explain(row)


def test_hostile_xml_replies_end_typed_within_the_memory_bound(tmp_path: Path) -> None:
    """Each hostile provider reply ends as a typed result or a RefreshError, within the memory bound."""
    row = run_scenario("hostile-xml", tmp_path, requests=XML_REPLIES)
    assert row.requests == XML_REPLIES and row.ok, explain(row)
