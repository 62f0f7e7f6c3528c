"""A boot image's RefreshPkgSource waits `boot_image_operation_timeout_s`, other calls the usual timeout.

The emulator answers every operation after a fixed latency, and with a WS-Man TimedOut fault once
the request's OperationTimeout is shorter: the latency stands for a boot image being rebuilt.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from config.settings import ProviderSettings, RetryPolicy
from errors import OperationTimeoutError
from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME, EmulatorFactory
from worker.domain.packages import BOOT_IMAGE_CLASS
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport

pytestmark = pytest.mark.integration

LATENCY_S = 1.5
OPERATION_TIMEOUT_S = 1
READ_TIMEOUT_S = 2


def test_a_boot_image_refresh_outlasts_the_usual_operation_timeout(emulator_factory: EmulatorFactory) -> None:
    """1.5 s per operation: a boot image's Invoke (4 s allowed) is accepted, a package's (1 s) times out."""
    emulator = emulator_factory(auth_modes=("basic",), allow_unencrypted=True, latency_s=LATENCY_S)
    provider = ProviderSettings(
        endpoint=emulator.url,
        transport="basic",
        username=EMULATOR_USERNAME,
        password=SecretStr(EMULATOR_PASSWORD),
        allow_unencrypted=True,
        operation_timeout_s=OPERATION_TIMEOUT_S,
        read_timeout_s=READ_TIMEOUT_S,
        boot_image_operation_timeout_s=4,
    )
    assert provider.boot_image_read_timeout_s == 5
    site = emulator.settings.site_code
    no_retries = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0)
    client = SccmClient(ProviderTransport(site, provider), site, no_retries)
    plain = [p for p in emulator.provider.packages() if p["PkgSourceFlag"] == 2]
    boot = next(p for p in plain if p["class"] == BOOT_IMAGE_CLASS)
    package = next(p for p in plain if p["class"] == "SMS_Package")
    try:
        assert client.refresh(BOOT_IMAGE_CLASS, boot["PackageID"]) == 0
        # The longer read timeout was for that call only.
        assert client.transport.protocol().transport.read_timeout_sec == READ_TIMEOUT_S
        with pytest.raises(OperationTimeoutError):
            client.refresh("SMS_Package", package["PackageID"])
    finally:
        client.transport.close()
    invokes = emulator.provider.call_log()["packages"]
    assert invokes[boot["PackageID"]]["invokes"] == 1
