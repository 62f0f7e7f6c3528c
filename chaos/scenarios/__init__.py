"""The scenarios, in the order `python -m chaos` runs them. Add one here to register it."""

from __future__ import annotations

from typing import Final

from chaos.scenario import Scenario
from chaos.scenarios import baseline, hostile_kwargs, hostile_xml, provider_faults, redis_restart, worker_kill

__all__ = ["SCENARIOS"]

SCENARIOS: Final[dict[str, Scenario]] = {
    scenario.name: scenario
    for scenario in (
        baseline.SCENARIO,
        worker_kill.SCENARIO,
        redis_restart.SCENARIO,
        provider_faults.SCENARIO,
        hostile_kwargs.SCENARIO,
        hostile_xml.SCENARIO,
    )
}
