"""`ProviderTransport` keeps its pywinrm session after a SOAP fault and rebuilds it after anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from errors import NotFoundError, RefreshError, ServerBusyError
from testing.canned_http import CannedAdapter, canned_client

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"


@pytest.mark.parametrize(
    ("status", "body", "error_class", "kept"),
    [
        (500, (CAPTURES / "omi_wmi_not_found.xml").read_bytes(), NotFoundError, True),
        (500, (CAPTURES / "omi_wmi_not_found.xml").read_text(encoding="utf-8").encode("utf-16"), NotFoundError, True),
        (503, b"<html>Service Unavailable</html>", ServerBusyError, False),
    ],
    ids=["fault", "utf-16-fault", "http-503"],
)
def test_a_fault_keeps_the_session_and_other_failures_reset_it(
    status: int, body: bytes, error_class: type[RefreshError], kept: bool
) -> None:
    """A SOAP fault is a healthy conversation; an HTTP error without one may be a dead session."""
    client = canned_client(CannedAdapter(body, status))
    before = client.transport.protocol()

    with pytest.raises(error_class):
        client.get_package("SMS_DriverPackage", "PS100012")

    assert (client.transport.protocol() is before) is kept
