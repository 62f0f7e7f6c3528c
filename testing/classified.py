"""Assert what a WS-Man layer exception means once `worker.provider.classify` has read it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from errors import RefreshError
from worker.provider.classify import error_from_wsman
from worker.wsman import WsmanError

__all__ = ["raises_classified"]


@contextmanager
def raises_classified(error_class: type[RefreshError], match: str | None = None) -> Iterator[None]:
    """The block raises a WS-Man exception that classifies as exactly `error_class`, its message
    matching `match` (a regular expression searched for, like `pytest.raises`)."""
    with pytest.raises(WsmanError) as caught:
        yield
    error = error_from_wsman(caught.value)
    assert type(error) is error_class, f"{type(caught.value).__name__} classified as {type(error).__name__}"
    if match is not None:
        assert re.search(match, error.message), f"{error.message!r} does not match {match!r}"
