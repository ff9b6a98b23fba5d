"""The demo's clients: send the workload to the router with raw httpx2, keep-alive.

Runs as its own process (``python -m llmtally.demo.child load ...``) so that the clients'
HTTP work uses the second core. ``concurrency`` workers share one iterator of calls
(``workload.calls``), spread over a few clients (a pool's bookkeeping grows with its
connections). Each response is read to its end. Stops after ``requests`` calls, after
``duration`` seconds, or on SIGTERM/SIGINT (in-flight calls finish). Prints one JSON line
on stdout: ``LoadReport``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import anyio
import httpx2
import msgspec

from ._aio import run_async
from .workload import Call, calls

__all__ = ["LoadReport", "main", "run_load"]

_WORKERS_PER_CLIENT = 6


class LoadReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the clients saw: ``sent`` calls, answers by HTTP status, calls that got no
    full answer by exception name, and the wall time."""

    sent: int
    statuses: dict[str, int]
    errors: dict[str, int]
    elapsed_s: float
    cpu_s: float
    stopped_early: bool


async def run_load(
    router_url: str,
    plan: Iterator[Call],
    *,
    concurrency: int,
    duration: float | None,
    request_timeout: float,
) -> LoadReport:
    """Send ``plan`` to ``router_url`` with ``concurrency`` workers; see the module doc."""
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    sent = 0
    stop = anyio.Event()
    started, cpu_started = time.perf_counter(), time.process_time()
    n_clients = max(1, -(-concurrency // _WORKERS_PER_CLIENT))
    per_client = -(-concurrency // n_clients)
    limits = httpx2.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    clients = [
        httpx2.AsyncClient(base_url=router_url, limits=limits, timeout=request_timeout)
        for _ in range(n_clients)
    ]

    async def worker(client: httpx2.AsyncClient) -> None:
        nonlocal sent
        for call in plan:  # the shared iterator: each call is taken by one worker
            if stop.is_set():
                return
            sent += 1
            try:
                async with client.stream(
                    "POST", call.path, content=call.body, headers=call.headers
                ) as response:
                    async for _ in response.aiter_raw():
                        pass
                statuses[str(response.status_code)] += 1
            except httpx2.HTTPError as exc:
                errors[type(exc).__name__] += 1

    async def stop_on_signals() -> None:
        # Kept open until the end: a second signal must not fall back to the default
        # action (death without a report).
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()

    async def stop_in_time(seconds: float) -> None:
        await anyio.sleep(seconds)
        stop.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals)
            if duration is not None:
                tg.start_soon(stop_in_time, duration)
            async with anyio.create_task_group() as workers:
                for i in range(concurrency):
                    workers.start_soon(worker, clients[i % n_clients])
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for client in clients:
                await client.aclose()
    return LoadReport(
        sent=sent,
        statuses=dict(statuses),
        errors=dict(errors),
        elapsed_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu_started,
        stopped_early=stop.is_set(),
    )


def main(argv: Sequence[str]) -> int:
    """``load --router URL --requests N --concurrency C --seed S [--duration D]``."""
    p = argparse.ArgumentParser(prog="llmtally.demo.child load")
    p.add_argument("--router", required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--upstream-timeout", type=float, required=True)
    args = p.parse_args(argv)
    plan = calls(args.seed, args.requests, timeout_ms=args.upstream_timeout * 1000)

    async def go() -> LoadReport:
        return await run_load(
            args.router,
            plan,
            concurrency=args.concurrency,
            duration=args.duration,
            request_timeout=args.upstream_timeout + 30,
        )

    report = run_async(go)
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    sys.stdout.flush()
    return 0
