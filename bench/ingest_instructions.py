"""What one event costs each process of ``EventStore(writer="process")``, in
instructions counted by valgrind.

``bench/ingest.py`` measures events/s, which swings with the machine's load; instruction
counts do not. The same workload as that bench (its ``record``: ``record_llm_completed``
in a loop, then ``flush``) runs under ``valgrind --tool=callgrind --trace-children=yes`` twice,
with ``--small`` and ``--events`` events; the difference, divided by the difference in
events, is the cost per event of the router process (record → aggregate → prepare the
batch) and of the writer child (roll up and insert), start-up and teardown cancelled out.
The plain peer: ``executemany`` of the same rows into the same schema, counted the same
way (``--plain``), with and without the rows being inserted::

    .venv/bin/python bench/ingest_instructions.py [--events 30000] [--small 5000]

Takes about three minutes. The router and the child run side by side: the slower of the
two bounds the rate, so both figures matter.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _record(n: int) -> None:
    import uvloop
    from ingest import record

    from llmtally import EventStore

    async def run() -> None:
        path = Path(tempfile.mkdtemp(prefix="llmtally-instr-")) / "s.db"
        async with EventStore(path, capacity=10_000, overflow="block", writer="process") as store:
            await record(store, n)

    uvloop.run(run())


def _plain(n: int, insert: bool) -> None:
    import pickle
    import sqlite3

    from _plain import plain_sqlite3

    from llmtally.storage.rows import COLUMNS
    from llmtally.storage.sqlite import MIGRATIONS

    rows = pickle.loads(Path(os.environ["LLMTALLY_ROWS"]).read_bytes())[:n]
    db = sqlite3.connect(
        Path(tempfile.mkdtemp(prefix="llmtally-instr-")) / "p.db", isolation_level=None
    )
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for migration in MIGRATIONS:
        db.executescript(migration)
    sql = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    if insert:
        with plain_sqlite3():
            for i in range(0, len(rows), 1000):
                db.execute("BEGIN IMMEDIATE")
                db.executemany(sql, rows[i : i + 1000])
                db.execute("COMMIT")
    os._exit(0)


def _counts(args: list[str], env: dict[str, str]) -> dict[str, int]:
    """Instructions per process of ``bench/ingest_instructions.py --child ARGS``: the
    router (``"router"``) and, if any, the writer child (``"child"``)."""
    out_dir = tempfile.mkdtemp(prefix="llmtally-cg-")
    subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out_dir}/cg.%p",
            sys.executable, __file__, "--child", *args,
        ],
        capture_output=True, check=True, env={**env, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    counts: dict[str, int] = {}
    for name in glob.glob(f"{out_dir}/cg.*"):
        text = Path(name).read_text(errors="replace")
        cmd = next(line for line in text.splitlines() if line.startswith("cmd:"))
        total = next(
            int(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("summary:", "totals:"))
        )
        counts["child" if "writer_child" in cmd or " -c " in cmd else "router"] = total
    return counts


def main(n: int, small: int) -> None:
    import pickle

    sys.path.insert(0, str(HERE))
    from ingest import _llmtally

    from llmtally.storage.rows import event_to_row

    rows_file = Path(tempfile.mkdtemp(prefix="llmtally-rows-")) / "rows.pkl"
    path = Path(tempfile.mkdtemp(prefix="llmtally-instr-")) / "s.db"
    _, _, sample = asyncio.run(_llmtally(path, n, "thread"))
    rows_file.write_bytes(pickle.dumps([event_to_row(e) for e in sample]))
    env = {**os.environ, "LLMTALLY_ROWS": str(rows_file)}
    big = _counts(["record", str(n)], env)
    little = _counts(["record", str(small)], env)
    per = {k: (big[k] - little.get(k, 0)) / (n - small) for k in big}
    plain_rows = _counts(["plain", str(n), "insert"], env)["router"]
    plain_none = _counts(["plain", str(n), "none"], env)["router"]
    plain = (plain_rows - plain_none) / n
    print(
        f"python {sys.version.split()[0]}, {small:,} and {n:,} events, instructions per event (valgrind)"
    )
    print(f"router process (record, aggregate, prepare): {per['router']:>9,.0f}")
    print(f"writer child (roll up, insert, commit):      {per.get('child', 0):>9,.0f}")
    print(f"plain sqlite3 executemany, same rows:        {plain:>9,.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE))
        if sys.argv[2] == "record":
            _record(int(sys.argv[3]))
        else:
            _plain(int(sys.argv[3]), sys.argv[4] == "insert")
        sys.exit(0)
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--small", type=int, default=5_000)
    a = ap.parse_args()
    main(a.events, a.small)
