"""Every example in examples/ and the README's code runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_example_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path / "a.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    total, cost, ttft = out.split(" ", 2)
    assert total == "2"
    assert cost == "2"  # 11 × $0.15/MTok + 1 × $0.60/MTok = 2,250 nano-dollars → 2 µ$
    assert "Quantiles(" in ttft


def test_readme_embedding_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has python examples"
    for block in blocks:
        subprocess.run(
            [sys.executable, "-c", block], cwd=tmp_path, check=True, timeout=60, capture_output=True
        )
