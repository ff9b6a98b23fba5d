"""Hypothesis settings for the property tests: small by default, bigger on demand.

``make test`` runs the ``default`` profile (the whole of ``tests/property`` in well under
30 s on two busy cores). ``LLMTALLY_HYPOTHESIS_PROFILE=long`` runs many more examples and
longer state-machine runs, for a hunt before a release::

    LLMTALLY_HYPOTHESIS_PROFILE=long pytest -p no:cacheprovider tests/property --timeout 0

Profiles are applied per test (``@settings(parent=...)``), not loaded globally, so the
other hypothesis tests of the suite keep their own settings.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE", "calls", "machine"]

_SUPPRESS: Final = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

PROFILE: Final = os.environ.get("LLMTALLY_HYPOTHESIS_PROFILE", "default")
if PROFILE not in ("default", "long"):
    raise RuntimeError(f"LLMTALLY_HYPOTHESIS_PROFILE must be default or long, got {PROFILE!r}")
_LONG: Final = PROFILE == "long"


def calls(examples: int) -> settings:
    """For a ``@given`` test of API calls: ``examples`` by default, 20× as many when long."""
    return settings(
        max_examples=examples * 20 if _LONG else examples,
        deadline=None,
        suppress_health_check=_SUPPRESS,
        print_blob=True,
    )


def machine(examples: int, steps: int) -> settings:
    """For a state machine: ``examples`` runs of at most ``steps`` steps (long: 20×, 3×)."""
    return settings(
        max_examples=examples * 20 if _LONG else examples,
        stateful_step_count=steps * 3 if _LONG else steps,
        deadline=None,
        suppress_health_check=_SUPPRESS,
        print_blob=True,
    )
