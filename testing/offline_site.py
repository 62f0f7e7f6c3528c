"""An emulated site whose DP02 is offline for good (copies retried every half second for ever),
(with `fast_follow_env` from testing.fixtures_pipeline, the worker follows requests to every DP quickly).

    settings, providers = offline_dp_site("OS1")
    pipeline_factory(extra_emulators={"OS1": settings}, extra_providers=providers,
                     worker_extra_env=fast_follow_env(15.0, max_dp_rows="3"), ...)

ConfigMgr's 100 retries, in short; the other DPs copy in 0.05 s. Basic over HTTP, as the usual
test sites; `provider_extra` adds provider settings (`max_concurrency`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from emulator.settings import EmulatorSettings
from testing.fixtures_emulator import make_emulator_settings
from testing.following import basic_site_provider

__all__ = ["offline_dp_site"]

Providers = Callable[[dict[str, Any]], dict[str, dict[str, str]]]


def offline_dp_site(
    site_code: str, *, provider_extra: Mapping[str, str] | None = None
) -> tuple[EmulatorSettings, Providers]:
    settings = make_emulator_settings(
        site_code=site_code,
        auth_modes=("basic",),
        allow_unencrypted=True,
        dp_copy_time_s=0.05,
        dp_retry_delay_s=0.5,
        dp_retry_count=100_000,
        dp_offline=("DP02",),
    )

    def providers(emulators: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {site_code: basic_site_provider(emulators[site_code].url, **(provider_extra or {}))}

    return settings, providers
