"""The scenarios, in the order `python -m chaos` runs them. Add one here to register it."""

from __future__ import annotations

from typing import Final

from chaos.scenario import Scenario
from chaos.scenarios import (
    baseline,
    bulk_kill,
    fence_counter_example,
    hostile_kwargs,
    hostile_xml,
    provider_faults,
    redis_maxmemory,
    redis_restart,
    worker_kill,
    worker_sigstop,
)

__all__ = ["SCENARIOS"]

SCENARIOS: Final[dict[str, Scenario]] = {
    scenario.name: scenario
    for scenario in (
        baseline.SCENARIO,
        worker_kill.SCENARIO,
        worker_sigstop.SCENARIO,
        redis_restart.SCENARIO,
        redis_maxmemory.SCENARIO,
        provider_faults.SCENARIO,
        fence_counter_example.SCENARIO,
        bulk_kill.SCENARIO,
        hostile_kwargs.SCENARIO,
        hostile_xml.SCENARIO,
    )
}
