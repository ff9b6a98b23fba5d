"""The README's Guarantees table names tests that exist: a promise cannot outlive its proof."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)`")


def test_every_test_the_guarantees_name_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Guarantees\n", 1)[1].split("\n## ", 1)[0]
    named: list[tuple[str, str]] = []
    for row in section.splitlines():
        current = None
        for path, name in REFERENCE.findall(row):
            current = path or current  # `::name` continues the file named before it
            assert current, row
            named.append((current, name))
    assert len(named) >= 20
    for path, name in named:
        source = (ROOT / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), f"{path}::{name}"
