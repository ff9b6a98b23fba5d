"""``Trackers.observe`` alone, in instructions per event (valgrind): no aggregator, no loop.

The events of ``bench/trackers.py`` are cut into batches (2,000 or 64 events) and each
batch's ``StatsDelta`` is built beforehand; a child process then feeds the batches to
``Trackers.observe`` under ``valgrind --tool=cachegrind --cache-sim=no``, and a child
that builds the same batches without observing them is subtracted. Both warm up on 600
events first (imports, the error normalizer's regexes). Finer-grained than
``trackers_instructions.py`` (whose aggregator and event loop are the same code on every
branch), so it is the one to compare variants of the trackers with:

    PYTHONPATH=src .venv/bin/python bench/trackers_alone.py [--events 20000]

About a minute per row (valgrind runs Python ~50x slower).
"""

from __future__ import annotations

import argparse
import os
import sys

from _valgrind import child_instructions
from trackers import make_events, make_trackers

from llmtally.analysis.stats import StatsDelta
from llmtally.events import AnalyticsEvent

ROWS = (("plain", 2_000), ("plain", 64), ("streams", 2_000), ("streams", 64))


def _batches(
    events: list[AnalyticsEvent], size: int
) -> list[tuple[list[AnalyticsEvent], StatsDelta]]:
    return [
        (events[j : j + size], StatsDelta().add_all(events[j : j + size]))
        for j in range(0, len(events), size)
    ]


def _observe(batches: list[tuple[list[AnalyticsEvent], StatsDelta]]) -> None:
    observe = make_trackers().observe
    for events, delta in batches:
        observe(events, delta)


def _child(mix: str, size: int, n: int, observe: bool) -> None:
    _observe(_batches(make_events(600, streams=mix == "streams"), size))
    batches = _batches(make_events(n, streams=mix == "streams"), size)
    if observe:
        _observe(batches)


def _instructions(mix: str, size: int, n: int, observe: bool) -> int:
    return child_instructions(__file__, mix, str(size), str(n), str(int(observe)))


def main(n: int) -> None:
    print(f"python {sys.version.split()[0]}, {n:,} events, Trackers.observe alone (valgrind)")
    print(f"{'mix':<8} {'batches':>8} {'instructions per event':>23}")
    for mix, size in ROWS:
        setup = _instructions(mix, size, n, observe=False)
        on = _instructions(mix, size, n, observe=True)
        print(f"{mix:<8} {size:>8,} {(on - setup) / n:>23,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        mix, size, count, observe = sys.argv[2:6]
        _child(mix, int(size), int(count), observe == "1")
        sys.stdout.flush()
        os._exit(0)  # the interpreter's teardown is no part of the run
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=20_000)
    main(ap.parse_args().events)
