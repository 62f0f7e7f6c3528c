"""Typed settings for sccm-refresh, read once (see `config.settings`)."""

from config.settings import (
    LimitSettings,
    ProviderSettings,
    RetryPolicy,
    RetrySettings,
    Settings,
    get_settings,
    reset_settings,
)

__all__ = [
    "LimitSettings",
    "ProviderSettings",
    "RetryPolicy",
    "RetrySettings",
    "Settings",
    "get_settings",
    "reset_settings",
]
