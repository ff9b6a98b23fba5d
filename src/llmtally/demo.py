"""``llmtally demo``: record a simulated mixed workload and show what llmtally sees.

Several models and providers, two agents, cached tokens, streaming-like TTFTs and ~2%
failures of several kinds, recorded concurrently into ``<dir>/analytics.db``; then the
stats as tables. Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .analysis.stats import ComputedStats, ModelStats
from .pipeline.aggregate import format_usd
from .store import EventStore

__all__ = ["add_arguments", "run"]

# (model, weight, median latency ms, median ttft ms)
_MODELS: tuple[tuple[str, float, float, float], ...] = (
    ("gpt-4o-mini", 0.35, 650.0, 180.0),
    ("gpt-4o", 0.15, 1400.0, 320.0),
    ("claude-3-5-sonnet", 0.2, 1800.0, 450.0),
    ("claude-3-5-haiku", 0.12, 700.0, 220.0),
    ("gemini-1.5-flash", 0.1, 500.0, 150.0),
    ("mistral-large-latest", 0.05, 1200.0, 300.0),
    ("acme-internal-7b", 0.03, 300.0, 90.0),  # not in any price list: shows as unpriced
)
_FAILURES: tuple[tuple[str, int, str], ...] = (
    ("rate_limited", 429, "429 Too Many Requests: rate limit reached for requests"),
    ("server_error", 500, "500 Internal Server Error"),
    ("overloaded", 529, "Overloaded"),
    ("timeout", 504, "upstream timed out after 60s"),
)
_AGENTS = ("support-bot", "research-agent")
_KEYS = ("key-prod", "key-batch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``llmtally demo``."""
    parser.add_argument("--requests", type=int, default=20_000, help="simulated LLM calls")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent simulated clients")
    parser.add_argument(
        "--dir", type=Path, default=Path("llmtally-demo"), help="where analytics.db is written"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the workload")
    parser.add_argument(
        "--fresh", action="store_true", help="delete an earlier demo database before starting"
    )


def _workload(rng: random.Random, n: int) -> list[dict[str, Any]]:
    weights = [w for _, w, _, _ in _MODELS]
    calls: list[dict[str, Any]] = []
    for _ in range(n):
        model, _, latency, ttft = rng.choices(_MODELS, weights)[0]
        input_tokens = int(rng.lognormvariate(math.log(900), 0.8)) + 1
        cached = int(input_tokens * rng.choice((0.0, 0.0, 0.5, 0.8)))
        call: dict[str, Any] = {
            "model": model,
            "agent_id": rng.choice(_AGENTS),
            "provider_id": rng.choice(_KEYS),
            "input_tokens": input_tokens,
            "cached_input_tokens": cached,
            "duration_ms": rng.lognormvariate(math.log(latency), 0.45),
        }
        if rng.random() < 0.02:
            code, status, message = rng.choice(_FAILURES)
            call.update(error_code=code, status_code=status, error_message=message)
        else:
            call["output_tokens"] = int(rng.lognormvariate(math.log(250), 0.9)) + 1
            call["ttft_ms"] = min(call["duration_ms"], rng.lognormvariate(math.log(ttft), 0.35))
        calls.append(call)
    return calls


async def _drive(
    store: EventStore, calls: list[dict[str, Any]], concurrency: int, on_done: Any
) -> None:
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](concurrency * 2)

    async def client(jobs: anyio.abc.ObjectReceiveStream[dict[str, Any]]) -> None:
        async with jobs:
            async for call in jobs:
                if "error_code" in call:
                    await store.record_llm_failed(**call)
                else:
                    await store.record_llm_completed(**call)
                on_done()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(client, receive.clone())
        async with send:
            receive.close()
            for call in calls:
                await send.send(call)


def _q(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(title: str, rows: dict[str, ModelStats]) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for col in (
        "",
        "requests",
        "failed",
        "input tok",
        "cached",
        "output tok",
        "cost $",
        "p50 ms",
        "p95 ms",
        "p50 TTFT",
        "p95 TTFT",
    ):
        t.add_column(col, justify="left" if not col else "right")
    for name, m in sorted(rows.items(), key=lambda kv: -kv[1].cost_nanos):
        cost = format_usd(m.cost_nanos) + (" *" if m.unpriced_requests else "")
        t.add_row(
            name,
            f"{m.requests:,}",
            f"{m.failed_requests:,}",
            f"{m.input_tokens:,}",
            f"{m.cached_input_tokens:,}",
            f"{m.output_tokens:,}",
            cost,
            _q(m.duration_ms.p50),
            _q(m.duration_ms.p95),
            _q(m.ttft_ms.p50),
            _q(m.ttft_ms.p95),
        )
    return t


def render(stats: ComputedStats, elapsed: float | None = None, db: Path | None = None) -> None:
    """Print ``stats`` as tables on the terminal."""
    from rich.console import Console

    console = Console()
    if console.width < 130:  # a pipe or a narrow terminal: keep the tables readable
        console = Console(width=130)
    s = stats
    rate = f" in {elapsed:.1f}s ({s.total_requests / elapsed:,.0f} req/s)" if elapsed else ""
    console.print(
        f"[bold]{s.total_requests:,}[/] requests{rate}, [bold]{s.failed_requests:,}[/] failed, "
        f"cost [bold]${format_usd(s.total_cost_nanos)}[/], tokens in {s.total_input_tokens:,} "
        f"(cached {s.total_cached_input_tokens:,}) / out {s.total_output_tokens:,}"
    )
    if s.unpriced_requests:
        console.print(
            f"[yellow]{s.unpriced_requests:,} requests used models without a price "
            f"(marked *): the total cost is incomplete[/]"
        )
    console.print(_table("By model", s.by_model))
    console.print(_table("By provider", s.by_provider))
    console.print(_table("By agent", s.by_agent))
    console.print(_table("By API key", s.by_provider_id))
    console.print(
        f"dropped events: {s.dropped_events} · unsynced (no collector configured): "
        f"{s.unsynced_events:,} · write errors: {s.persist_errors}"
        + (f" · database: {db}" if db else "")
    )


async def _main(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    db = args.dir / "analytics.db"
    calls = _workload(random.Random(args.seed), args.requests)
    started = time.perf_counter()
    async with EventStore(db, overflow="block") as store:
        await store.record_router_started(port=None)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("recording", total=len(calls))
            await _drive(store, calls, args.concurrency, lambda: progress.advance(task))
        await store.record_router_stopped()
        elapsed = time.perf_counter() - started
        render(store.stats(), elapsed, db)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    if args.requests < 0 or args.concurrency < 1:
        raise SystemExit("llmtally demo: --requests must be ≥ 0 and --concurrency ≥ 1")
    if args.fresh:  # before the event loop starts: plain blocking file calls are fine here
        for suffix in ("", "-wal", "-shm"):
            Path(str(args.dir / "analytics.db") + suffix).unlink(missing_ok=True)
    try:
        import uvloop

        return uvloop.run(_main(args))
    except ImportError:  # pragma: no cover - uvloop missing on this platform
        return anyio.run(_main, args)
