"""`SccmClient.enumerate` against the emulator over NTLM with message encryption: early stops release
the server's enumeration context, complete enumerations leave none behind."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from config.settings import ProviderSettings, RetryPolicy
from emulator.server import Emulator
from emulator.sms.provider import Provider
from testing.fixtures_emulator import EMULATOR_PASSWORD, EMULATOR_USERNAME
from worker.provider.client import SccmClient
from worker.provider.transport import ProviderTransport

pytestmark = pytest.mark.integration

_QUERY = "SELECT PackageID FROM SMS_PackageBaseclass"
_PAGE = 3


def _open_contexts(emulator: Emulator) -> dict[str, int]:
    provider = emulator.provider
    assert isinstance(provider, Provider)  # the in-process emulator's own provider
    return provider.open_enumerations()


def _client(emulator: Emulator) -> SccmClient:
    provider = ProviderSettings(
        endpoint=emulator.url,
        transport="ntlm",
        username=EMULATOR_USERNAME,
        password=SecretStr(EMULATOR_PASSWORD),
        operation_timeout_s=5,
        read_timeout_s=10,
    )
    site = emulator.settings.site_code
    no_retries = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0)
    return SccmClient(ProviderTransport(site, provider), site, no_retries)


def test_closing_an_enumeration_early_releases_its_context(emulator_ntlm: Emulator) -> None:
    """After taking a few items and closing the generator, the emulator holds no open context."""
    client = _client(emulator_ntlm)
    try:
        items = client.enumerate(_QUERY, page_size=_PAGE)
        taken = [next(items) for _ in range(_PAGE + 1)]  # the first page and one item of the second
        assert _open_contexts(emulator_ntlm)["contexts"] == 1

        items.close()

        assert len(taken) == _PAGE + 1
        assert _open_contexts(emulator_ntlm) == {"contexts": 0, "package_ids": 0}
    finally:
        client.transport.close()


def test_a_complete_enumeration_leaves_no_context(emulator_ntlm: Emulator) -> None:
    """Reading to EndOfSequence returns every package and leaves nothing to release."""
    client = _client(emulator_ntlm)
    try:
        found = {item.get("PackageID") for item in client.enumerate(_QUERY, page_size=_PAGE)}

        assert found == {package["PackageID"] for package in emulator_ntlm.provider.packages()}
        assert _open_contexts(emulator_ntlm) == {"contexts": 0, "package_ids": 0}
    finally:
        client.transport.close()
