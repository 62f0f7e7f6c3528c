"""Flag value parsers for `python -m emulator`: each raises argparse.ArgumentTypeError with a
message naming the rule, so a bad value is a usage error (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import get_args

from emulator.fault_injection import MAX_LATENCY_S
from emulator.settings import FAULT_KINDS, AuthMode

__all__ = [
    "AUTH_MODES",
    "auth_modes",
    "fault_rate",
    "latency_ms",
    "non_negative_float",
    "non_negative_int",
    "port",
    "positive_float",
    "positive_int",
    "share",
    "typed",
]

AUTH_MODES: tuple[str, ...] = get_args(AuthMode)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def latency_ms(text: str) -> float:
    value = non_negative_float(text)
    if value > MAX_LATENCY_S * 1000.0:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LATENCY_S * 1000.0:g} ms, got {text}")
    return value


def share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def auth_modes(text: str) -> tuple[AuthMode, ...]:
    modes = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [mode for mode in modes if mode not in AUTH_MODES]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(AUTH_MODES)}, got {text!r}")
    return tuple(dict.fromkeys(modes))  # type: ignore[arg-type]  # checked against AuthMode above


def fault_rate(text: str) -> tuple[str, float]:
    kind, separator, rate_text = text.partition("=")
    if not separator or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}")
    try:
        return kind, share(rate_text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"rate of {kind} must be a number between 0 and 1") from exc


def typed(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """Wrap `parse` so plain ValueErrors become argparse messages (never tracebacks)."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            raise
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid {name}: {text!r}") from exc

    convert.__name__ = name
    return convert
