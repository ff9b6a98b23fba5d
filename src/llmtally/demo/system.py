"""The demo as a running system on loopback, from start to clean stop.

::

    load (child) ──HTTP──▶ router (this process: LlmTallyMiddleware, EventStore) ──HTTP──▶ upstream (child)
                                 │ LlmTallyTransport records each call; the store syncs ──▶ collector (child)

The router's two agents have daily budgets in its store; the same budgets go to the
collector (``budgets.json`` in the demo folder, ``llmtally serve --budgets``), whose
dashboard then shows their spend as the collector sees it.

Order: the children start together (their imports overlap); the router serves once the
upstream printed its URL and the collector answers ``/health``; the clients' first
requests wait in the router's listen backlog meanwhile. When the clients are done (or
``stop`` is set), the router stops: its store drains and syncs everything to the
collector. Then the collector is asked how many events it holds, and the summary is made.
Every child is stopped on the way out, whatever happens (``Children``).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import anyio
import httpx2
import msgspec
import uvicorn

from .._config import SyncConfig
from ..analysis.budgets import Budget
from ..server.budget_file import dump_budgets
from ..store import EventStore
from .load import LoadReport
from .processes import Children, wait_healthy
from .router import create_router_app
from .summary import DemoSummary, summarize
from .workload import AGENTS, FORWARDED_HEADERS, expected_spend_nanos

__all__ = ["BUDGETS_FILE", "DemoOptions", "dashboard_link", "run_demo"]

STARTUP_TIMEOUT_S: Final = 30.0
UPSTREAM_TIMEOUT_S: Final = 2.0
"""The router's read timeout upstream; the workload's timeouts answer 1 s later."""
SOFT_BUDGET_END_PERCENT: Final = 90
"""The first agent's budget is sized to end the run here: past its 50% and 80% marks."""
RELAXED_BUDGET_END_PERCENT: Final = 35
BUDGETS_FILE: Final = "budgets.json"
"""The agents' budgets, given to the collector (in the demo folder)."""


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """What ``llmtally demo`` was asked for."""

    requests: int = 20_000
    concurrency: int = 48
    duration: float | None = None
    seed: int = 7
    dir: Path = Path("llmtally-demo")
    port: int = 0
    keep_serving: bool = False


class View:
    """What the demo shows while it runs (``report.LiveView``); a no-op by default."""

    def live(self, store: EventStore, total: int) -> Any:
        """A context manager kept open while the workload runs."""
        return nullcontext()

    def refresh(self) -> None:
        """Redraw now (called a few times a second)."""


class _Router(uvicorn.Server):
    """uvicorn without its signal handlers: the demo handles Ctrl-C itself, in order."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _budgets(options: DemoOptions) -> list[Budget]:
    from ..pricing import PricingManager

    spend = expected_spend_nanos(
        options.seed, options.requests, PricingManager(), timeout_ms=UPSTREAM_TIMEOUT_S * 1000
    )
    budgets = []
    for agent, end_percent in zip(
        AGENTS, (SOFT_BUDGET_END_PERCENT, RELAXED_BUDGET_END_PERCENT), strict=True
    ):
        limit_micros = max(1, spend[agent.name] * 100 // end_percent // 1000)
        budgets.append(
            Budget(
                id=f"{agent.name}-daily",
                scope="agent_id",
                scope_value=agent.name,
                limit_micros=limit_micros,
                period="daily",
                kind="soft",
                thresholds=(50, 80, 100),
            )
        )
    return budgets


def dashboard_link(collector_url: str, read_token: str) -> str:
    """The dashboard's sign-in link: it trades ``?token=`` for a read-session cookie and
    drops the token from the address (``server.dashboard.route``)."""
    return f"{collector_url}/?{urlencode({'token': read_token})}"


def _child_env(tokens: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTALLY_")}
    env.update(tokens)
    return env


async def _collector_events(url: str, token: str) -> int:
    async with httpx2.AsyncClient(timeout=30.0) as client:
        answer = await client.get(
            f"{url}/analytics/stats", headers={"authorization": f"Bearer {token}"}
        )
    answer.raise_for_status()
    return int(answer.json()["total_events"])


async def run_demo(
    options: DemoOptions,
    view: View,
    stop: anyio.Event,
    on_summary: Callable[[DemoSummary], None],
) -> DemoSummary:
    """Run the system and the workload; returns the summary, which is also written to
    ``<dir>/summary.json`` and given to ``on_summary`` as soon as it is made (with
    ``keep_serving`` the collector then stays up until ``stop`` is set). Raises
    ``ChildFailed`` when a child process does not start or dies."""
    ingest_token, read_token = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    env = _child_env({"LLMTALLY_INGEST_TOKENS": ingest_token, "LLMTALLY_READ_TOKENS": read_token})
    collector_url = f"http://127.0.0.1:{options.port or _free_port()}"
    router_sock = socket.socket()
    router_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    router_sock.bind(("127.0.0.1", 0))
    router_sock.listen(2048)  # the clients' first requests wait here until the router runs
    router_url = f"http://127.0.0.1:{router_sock.getsockname()[1]}"
    budgets = _budgets(options)
    budgets_file = options.dir / BUDGETS_FILE
    await anyio.Path(budgets_file).write_bytes(dump_budgets(budgets))
    try:
        async with Children(options.dir) as children:
            upstream = await children.start("upstream", [])
            collector = await children.start(
                "collector",
                [
                    "--db",
                    str(options.dir / "collector.db"),
                    "--budgets",
                    str(budgets_file),
                    "--port",
                    collector_url.rsplit(":", 1)[1],
                    "--log-level",
                    "warning",
                    "--shutdown-timeout",
                    "5",
                ],
                env=env,
            )
            load_args = [
                "--router",
                router_url,
                "--requests",
                str(options.requests),
                "--concurrency",
                str(options.concurrency),
                "--seed",
                str(options.seed),
                "--upstream-timeout",
                str(UPSTREAM_TIMEOUT_S),
            ]
            if options.duration is not None:
                load_args += ["--duration", str(options.duration)]
            load = await children.start("load", load_args)
            upstream_url = await upstream.read_line(STARTUP_TIMEOUT_S)
            await wait_healthy(collector, f"{collector_url}/health", STARTUP_TIMEOUT_S)

            sync = SyncConfig(
                collector_url,
                ingest_token,
                sync_interval=0.5,
                batch_threshold=200,
                max_batch=1_000,
                shutdown_timeout=30.0,
            )
            store = EventStore(
                options.dir / "router.db", sync=sync, budgets=budgets, overflow="drop_newest"
            )
            app = create_router_app(
                f"{upstream_url}/v1",
                store,
                keys={agent.key: agent.name for agent in AGENTS},
                upstream_key="sk-demo-upstream",
                timeout=httpx2.Timeout(UPSTREAM_TIMEOUT_S, connect=5.0),
                limits=httpx2.Limits(max_connections=8, max_keepalive_connections=8),
                upstream_pools=-(-options.concurrency // 8),
                forward_headers=FORWARDED_HEADERS,
            )
            config = uvicorn.Config(
                app,
                lifespan="on",
                log_config=None,
                log_level="error",
                access_log=False,
                proxy_headers=False,  # LlmTallyMiddleware decides whom to trust
            )
            router = _Router(config)
            started, cpu_started = time.perf_counter(), time.process_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(router.serve, [router_sock])
                stopping = False
                with view.live(store, options.requests):
                    while load.process.returncode is None:
                        view.refresh()
                        with anyio.move_on_after(0.25):
                            await load.process.wait()
                        if stop.is_set() and not stopping and load.process.returncode is None:
                            load.process.terminate()  # the clients finish what is in flight
                            stopping = True
                    view.refresh()
                report = msgspec.json.decode(await load.read_line(5.0), type=LoadReport)
                cpu: dict[str, float | None] = {"clients": report.cpu_s}
                await children.stop(load)
                router.should_exit = True  # the store drains and syncs on the way out
            elapsed = time.perf_counter() - started
            cpu["router"] = time.process_time() - cpu_started
            cpu["upstream"] = upstream.cpu_seconds()
            await children.stop(upstream)
            collected = await _collector_events(collector_url, read_token)
            cpu["collector"] = collector.cpu_seconds()
            summary = summarize(
                store,
                report,
                collected,
                elapsed=elapsed,
                cpu_seconds={k: v for k, v in cpu.items() if v is not None},
                collector_url=collector_url,
                dashboard_url=dashboard_link(collector_url, read_token),
                read_token=read_token,
                files=options.dir,
            )
            data = msgspec.json.format(msgspec.json.encode(summary))
            await anyio.Path(options.dir / "summary.json").write_bytes(data + b"\n")
            on_summary(summary)
            if options.keep_serving and not stop.is_set():
                await stop.wait()
            return summary
    finally:
        router_sock.close()
