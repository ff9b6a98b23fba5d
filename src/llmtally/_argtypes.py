"""Value types of the command line's options (``argparse`` ``type=`` callables).

Each parses one option value or raises ``argparse.ArgumentTypeError`` with a message
that names what was expected, which ``argparse`` turns into a usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "non_negative_int",
    "port",
    "port_or_zero",
    "positive_float",
    "positive_int",
    "positive_seconds",
    "seconds_up_to_a_day",
]


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ≥ 0."""
    return 0 if text.strip() == "0" else positive_int(text)


def port(text: str) -> int:
    """A TCP port, 1–65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def port_or_zero(text: str) -> int:
    """A TCP port, or 0 for a free one."""
    return 0 if text.strip() == "0" else port(text)


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {what}: {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, "number")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    value = _number(text, "number of seconds")
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be positive seconds: {text}")
    return value


def seconds_up_to_a_day(text: str) -> float:
    """A number of seconds in (0, 86400]."""
    value = _number(text, "number of seconds")
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {value}")
    return value
