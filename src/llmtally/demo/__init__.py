"""``llmtally demo``: a complete system on this machine, a realistic workload, the results.

A fake OpenAI/Anthropic upstream, the example router (``demo.router``: llmtally's ASGI
middleware and httpx2 transport) with its embedded store syncing to a collector
(``llmtally serve``), and simulated clients — all on loopback, nothing to configure.
While it runs: a live progress bar and table; then a summary (``demo.summary``).

Modules: ``workload`` (the calls, pure), ``fake_upstream``/``fake_payloads`` (the fake
API), ``router``, ``load`` (the clients), ``child`` (child process entry), ``processes``
(starting and always stopping children), ``system`` (the run), ``report`` (the terminal).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .. import _argtypes as _types

__all__ = ["add_arguments", "run"]

_DESCRIPTION = """\
Run a complete llmtally system on this machine and put a realistic workload through it.

Started on 127.0.0.1, nothing to configure: a fake OpenAI/Anthropic API; the example
router recording every call (LlmTallyMiddleware + LlmTallyTransport) into its store,
which syncs to a collector (llmtally serve, SQLite, random API tokens); and clients
sending chat and messages calls, streamed and not, for two agents with daily budgets,
with about 2% failures (429, 500, 529, broken streams and connections, timeouts).

Shows live progress, then totals, per-model cost and latency, error patterns, the SLO,
budgets, whether the collector holds every event exactly once, and the dashboard's
sign-in link (it shows the same budgets: budgets.json is given to the collector). Files
go to --dir (earlier demo files there are replaced); summary.json holds the summary.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``llmtally demo``."""
    parser.description = _DESCRIPTION
    parser.add_argument(
        "--requests", type=_types.positive_int, default=20_000, help="calls the clients make"
    )
    parser.add_argument(
        "--concurrency",
        type=_types.positive_int,
        default=48,
        help="calls in flight at once (client workers)",
    )
    parser.add_argument(
        "--duration",
        type=_types.seconds_up_to_a_day,
        default=None,
        help="stop sending after this many seconds, even if not all --requests are sent "
        "(default: no time limit)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the workload")
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the summary keep the collector and its dashboard up until Ctrl-C",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("llmtally-demo"),
        help="folder for the databases, logs and summary.json",
    )
    parser.add_argument(
        "--port",
        type=_types.port_or_zero,
        default=0,
        help="the collector's port (default: 0, a free one)",
    )


def _prepare(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("router.db", "collector.db"):
        for suffix in ("", "-wal", "-shm"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)
    for name in ("summary.json", "budgets.json"):
        (folder / name).unlink(missing_ok=True)


def _single(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (task groups wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code: 0 (1 if the numbers disagree, 130 if
    interrupted before the workload's end). Raises ``OSError`` for an unusable ``--dir``."""
    import anyio

    from ..tables import wide_console
    from ._aio import run_async
    from .processes import ChildFailed
    from .report import LiveView, print_summary
    from .summary import DemoSummary
    from .system import DemoOptions, run_demo

    options = DemoOptions(
        requests=args.requests,
        concurrency=args.concurrency,
        duration=args.duration,
        seed=args.seed,
        dir=args.dir,
        port=args.port,
        keep_serving=args.keep_serving,
    )
    try:
        _prepare(options.dir)
    except OSError as exc:
        print(f"llmtally: error: demo: cannot use --dir {options.dir}: {exc}", file=sys.stderr)
        return 1
    console = wide_console()
    interrupted = summarized = False

    def on_summary(summary: DemoSummary) -> None:
        nonlocal summarized
        summarized = True
        print_summary(console, summary)
        if options.keep_serving:
            console.print("[bold]collector and dashboard up: Ctrl-C to stop[/]")

    async def main() -> DemoSummary | None:
        nonlocal interrupted
        stop = anyio.Event()
        result: DemoSummary | None = None
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        if stop.is_set():  # a second Ctrl-C: stop now (children still stopped)
                            tg.cancel_scope.cancel()
                        interrupted = interrupted or not summarized
                        stop.set()

            tg.start_soon(on_signals)
            result = await run_demo(options, LiveView(console), stop, on_summary)
            tg.cancel_scope.cancel()
        return result

    try:
        summary = run_async(main)
    except Exception as exc:
        cause = _single(exc)
        if not isinstance(cause, ChildFailed | OSError):
            raise cause from None
        print(f"llmtally: error: demo: {cause} (logs in {options.dir})", file=sys.stderr)
        return 1
    if summary is None or interrupted:
        return 130
    if not summary.consistent:
        print("llmtally: error: demo: the numbers above disagree", file=sys.stderr)
        return 1
    return 0
