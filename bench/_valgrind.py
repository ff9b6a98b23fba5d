"""What the benchmarks' instruction counts share: a bench script's ``--child`` run under
valgrind (``cachegrind``, no cache simulation, ``PYTHONHASHSEED=0``), and reading the
count back."""

from __future__ import annotations

import os
import re
import subprocess
import sys

CACHEGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def instructions_in(report: str) -> int:
    """The instruction count (``I refs``) in cachegrind's report."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", report)
    assert found is not None, report
    return int(found.group(1).replace(",", ""))


def child_instructions(script: str, *args: str) -> int:
    """Instructions executed by ``python SCRIPT --child ARGS`` under valgrind."""
    out = subprocess.run(
        [*CACHEGRIND, sys.executable, script, "--child", *args],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    return instructions_in(out.stderr)
