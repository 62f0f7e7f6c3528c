"""Helpers of the integration tests that follow requests to every DP (until=distributed).

providers = {"OS1": basic_site_provider(emulators["OS1"].url)}   # a worker site on an extra emulator
pick = package_picker(pipeline)                # a ready package no earlier call returned
run = follow(pipeline, pick(), timeout_s=25)   # one request with until=distributed, to its final
final = only_final(pipeline, run)              # its final, checked to be the request's only one
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.sms.provider import Provider
from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME
from testing.fixtures_pipeline import Pipeline, RefreshRun
from worker.domain.outcomes import Outcome

__all__ = ["Pick", "basic_site_provider", "emulated_provider", "follow", "only_final", "package_picker"]

Pick = Callable[..., dict[str, Any]]


def basic_site_provider(url: str, **extra: str) -> dict[str, str]:
    """A worker's provider fields for an extra emulator listening with Basic over plain HTTP."""
    return {
        "endpoint": url,
        "transport": "basic",
        "username": EMULATOR_USERNAME,
        "password": EMULATOR_PASSWORD,
        "allow_unencrypted": "true",
        "operation_timeout_s": "5",
        "read_timeout_s": "8",
        **extra,
    }


def emulated_provider(pipeline: Pipeline, site: str) -> Provider:
    provider = pipeline.emulators[site].provider
    assert isinstance(provider, Provider)
    return provider


def package_picker(pipeline: Pipeline) -> Pick:
    """A different ready package each call, so no test sees rows another left behind."""
    used: set[str] = set()

    def pick(site: str = "BS1") -> dict[str, Any]:
        pkg = pipeline.package(site, pkg_source_flag=2, package_class="SMS_Package", exclude=tuple(used))
        used.add(pkg["PackageID"])
        return pkg

    return pick


def follow(pipeline: Pipeline, pkg: dict[str, Any], *, site: str = "BS1", timeout_s: float, **extra: Any) -> RefreshRun:
    """One request for `pkg` followed to every DP, its events collected until its final."""
    return pipeline.refresh(
        site_code=site,
        package_id=pkg["PackageID"],
        package_class=pkg["class"],
        until="distributed",
        timeout_s=timeout_s,
        **extra,
    )


def only_final(pipeline: Pipeline, run: RefreshRun) -> Outcome:
    """The run's final, which must be the only final recorded for its request."""
    assert run.final is not None, run.statuses
    assert len(pipeline.finals()[run.request_id]) == 1
    return run.final
