"""The error hierarchy's published form (the `errors` package)."""

from __future__ import annotations

from errors import ProviderFailureError, ReturnValueError
from worker.wsman import ExtendedStatus


def test_return_value_is_carried_but_not_published_in_the_error() -> None:
    """`return_value` is an attribute for the worker; `as_dict()` keeps its published keys only."""
    error = ReturnValueError("RefreshPkgSource returned 1", code=1, return_value=1)

    assert error.return_value == 1
    assert ReturnValueError("x").return_value is None
    assert set(error.as_dict()) == {
        "kind",
        "message",
        "code",
        "wsman_code",
        "wmi_code",
        "http_status",
        "extended_status",
    }


def test_extended_status_is_the_wsman_value_and_publishes_unchanged() -> None:
    """An error holds the WS-Man layer's ExtendedStatus as it is; its published form is unchanged."""
    status = ExtendedStatus("SMS_ExtendedStatus", description="busy", error_code=5, status_code=1, extra={"Line": "9"})

    assert ProviderFailureError("x", extended_status=status).as_dict()["extended_status"] == status.as_dict()
    assert status.as_dict() == {
        "class": "SMS_ExtendedStatus",
        "description": "busy",
        "error_code": 5,
        "operation": None,
        "parameter_info": None,
        "provider_name": None,
        "status_code": 1,
    }
