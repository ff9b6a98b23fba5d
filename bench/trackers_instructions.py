"""What the trackers cost the aggregator, in instructions counted by valgrind.

``bench/trackers.py`` measures CPU time, which swings with the machine's load (the same
code gave 33% and 78% in two runs beside other work); instruction counts do not. For
each variant of that bench (plain or streams mix; full batches of 2,000 or small ones of
~64), a child process builds the events, runs a warm-up (1,000 events, trackers off and
on: imports, time zones), then the aggregator over N events with trackers off or on,
under ``valgrind --tool=cachegrind --cache-sim=no``; a child that only builds the events
and warms up is subtracted, so start-up cancels out. Children end with ``os._exit`` (the
interpreter's teardown frees the events, which is no part of either run):

    .venv/bin/python bench/trackers_instructions.py [--events 20000]

Takes about five minutes (valgrind runs Python ~50x slower). Instructions are not time:
the trackers' dict-heavy work runs at fewer instructions per cycle than the rest of the
aggregator, so their share of the CPU time is higher than their share of instructions.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvloop
from _valgrind import child_instructions
from trackers import make_events, make_trackers, run

MIXES = ("plain", "streams")
BATCHES = {"full": None, "small": 64}


async def _child(mix: str, batches: str, mode: str, n: int) -> None:
    warm = make_events(1_000, streams=mix == "streams")
    await run(warm, None, BATCHES[batches])
    await run(warm, make_trackers(), BATCHES[batches])
    events = make_events(n, streams=mix == "streams")
    if mode != "setup":
        await run(events, make_trackers() if mode == "on" else None, BATCHES[batches])


def _instructions(mix: str, batches: str, mode: str, n: int) -> int:
    return child_instructions(__file__, mix, batches, mode, str(n))


def main(n: int) -> None:
    print(f"python {sys.version.split()[0]}, {n:,} events, instructions per event (valgrind)")
    print(f"{'mix':<8} {'batches':<8} {'trackers off':>13} {'trackers on':>12} {'cost':>6}")
    for mix in MIXES:
        for batches in BATCHES:
            setup = _instructions(mix, batches, "setup", n)
            off = (_instructions(mix, batches, "off", n) - setup) / n
            on = (_instructions(mix, batches, "on", n) - setup) / n
            print(f"{mix:<8} {batches:<8} {off:>13,.0f} {on:>12,.0f} {on / off - 1:>6.0%}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        mix, batches, mode, count = sys.argv[2:6]
        uvloop.run(_child(mix, batches, mode, int(count)))
        sys.stdout.flush()
        os._exit(0)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=20_000)
    main(ap.parse_args().events)
