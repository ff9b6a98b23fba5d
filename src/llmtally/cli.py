"""The ``llmtally`` command: ``serve`` (the collector), ``demo``, ``stats``, ``export``, ``tail``.

``main(argv)`` returns the exit code: 0 on success, 2 for bad usage or configuration
(including a collector with no API tokens), 1 for a failure at run time. Errors are one
line on stderr, never a traceback. A subcommand is a ``(name, help, add_arguments, run)``
entry in ``_commands()``; heavy imports happen only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from . import _argtypes as _types

__all__ = ["build_parser", "main"]

PROG = "llmtally"


class _Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every option's help, descriptions kept as written. A help text that
    states its default itself, and flags (off by default), get no ``(default: ...)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, False):
            return text
        return super()._get_help_string(action)


# --- serve ------------------------------------------------------------------------------

_SERVE_DESCRIPTION = """\
Run the collector: routers sync events to POST /api/v1/analytics/events.

API tokens come from the environment, as comma-separated lists:
  LLMTALLY_INGEST_TOKENS  may post events (give these to routers)
  LLMTALLY_READ_TOKENS    may read stats and events
  LLMTALLY_ADMIN_TOKENS   may read, and clear the data (cannot post events)
With none set the server refuses to start, unless --insecure-no-auth.

Budgets (--budgets FILE, .toml or .json): the collector follows each budget's spend in
its current period from the stored events of every router, and shows it at
GET /analytics/budgets, on the dashboard and as llmtally_budget_* gauges in /metrics.
It reports; routers enforce (their EventStore budgets). A TOML file:

  [[budgets]]
  id = "support-daily"          # unique
  limit_usd = "25.00"           # or limit_micros = 25000000; never a float
  scope = "agent_id"            # global (default) | agent_id | provider_id | model
  scope_value = "support-bot"   # required unless scope = "global"
  period = "daily"              # daily | weekly | monthly (default) | total
  timezone = "Europe/Paris"     # where periods begin (default UTC)
  thresholds = [50, 80, 100]    # percentages reported once reached (default)
  kind = "soft"                 # soft (default) | hard (enforced by routers only)

As JSON: {"budgets": [{"id": "support-daily", "limit_usd": "25.00", ...}]}.
"""


def _add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default="analytics.db",
        help="SQLite database file (created if missing), or a postgresql:// URL",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=_types.port, default=8088, help="TCP port to listen on")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve every endpoint without any token (local experiments only)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_types.positive_int,
        default=8 * 1024 * 1024,
        help="largest request body accepted; larger ones get 413",
    )
    p.add_argument(
        "--max-batch",
        type=_types.positive_int,
        default=1000,
        help="most events accepted in one request; more get 413",
    )
    p.add_argument(
        "--body-timeout",
        type=_types.positive_seconds,
        default=30.0,
        help="seconds a request body may take to arrive; slower ones get 408",
    )
    p.add_argument(
        "--busy-timeout-ms",
        type=_types.positive_int,
        default=5000,
        help="how long a write waits on a locked database before answering 503",
    )
    p.add_argument(
        "--writer",
        choices=("thread", "process"),
        default="thread",
        help="SQLite: where ingest writes run: a thread sharing the event loop's GIL, or a "
        "child process beside it (half the event loop's CPU per event, one process more); "
        "ignored for PostgreSQL",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_types.positive_int,
        default=30,
        help="seconds in-flight requests get to finish on SIGTERM",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log verbosity",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--detect-interval",
        type=_types.non_negative_int,
        default=60,
        help="seconds between anomaly-detection passes over closed minutes (0: no detection)",
    )
    p.add_argument(
        "--anomaly-sensitivity",
        type=_types.positive_float,
        default=5.0,
        help="z-score an anomaly must reach (higher: fewer, surer anomalies)",
    )
    p.add_argument(
        "--budgets",
        type=Path,
        default=None,
        metavar="FILE",
        help="budgets to follow, a .toml or .json file (format above)",
    )


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from .server.serve import ServeError, ServeOptions, serve
    except ImportError as exc:
        return _fail(f"serve needs the server extra (pip install 'llmtally[server]'): {exc}", 1)
    options = ServeOptions(
        db=args.db,
        host=args.host,
        port=args.port,
        insecure_no_auth=args.insecure_no_auth,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        body_timeout_s=args.body_timeout,
        busy_timeout_ms=args.busy_timeout_ms,
        writer=args.writer,
        log_level=args.log_level,
        access_log=args.access_log,
        shutdown_timeout=args.shutdown_timeout,
        detect_interval_s=args.detect_interval or None,
        anomaly_sensitivity=args.anomaly_sensitivity,
        budgets=args.budgets,
    )
    try:
        return serve(options, dict(os.environ))
    except ServeError as exc:
        return _fail(f"serve: {exc}", exc.exit_code)


# --- demo -------------------------------------------------------------------------------


def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from . import demo

    demo.add_arguments(p)


def _run_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(args)


# --- stats ------------------------------------------------------------------------------


def _add_stats_arguments(p: argparse.ArgumentParser) -> None:
    from . import stats_command

    stats_command.add_arguments(p)


def _run_stats(args: argparse.Namespace) -> int:
    from . import stats_command

    return stats_command.run(args)


# --- export -----------------------------------------------------------------------------


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    from . import export_command

    export_command.add_arguments(p)


def _run_export(args: argparse.Namespace) -> int:
    from . import export_command

    return export_command.run(args)


# --- tail -------------------------------------------------------------------------------


def _add_tail_arguments(p: argparse.ArgumentParser) -> None:
    from . import tail_command

    tail_command.add_arguments(p)


def _run_tail(args: argparse.Namespace) -> int:
    from . import tail_command

    return tail_command.run(args)


def _commands() -> tuple[_Command, ...]:
    return (
        _Command("serve", "run the collector server", _add_serve_arguments, _run_serve),
        _Command(
            "demo",
            "run a complete system with a realistic workload",
            _add_demo_arguments,
            _run_demo,
        ),
        _Command(
            "stats", "print the statistics of a store's database", _add_stats_arguments, _run_stats
        ),
        _Command(
            "export", "export events as CSV, JSON or JSON Lines", _add_export_arguments, _run_export
        ),
        _Command("tail", "follow a collector's live events", _add_tail_arguments, _run_tail),
    )


# --- entry point ------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Analytics for LLM routers and proxies.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _commands():
        description = _SERVE_DESCRIPTION if command.name == "serve" else command.help
        p = sub.add_parser(
            command.name, help=command.help, description=description, formatter_class=_Formatter
        )
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args._run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _fail(f"{args.command}: {type(exc).__name__}: {exc}", 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
