"""``llmtally serve``: run the collector under uvicorn until SIGTERM or Ctrl-C.

Blocking, synchronous entry point for the CLI (it owns the process: event loop, signal
handlers, logging). Shutdown on SIGTERM/SIGINT is uvicorn's graceful one: stop
accepting, let in-flight requests finish (bounded by ``shutdown_timeout``), then run the
app's lifespan shutdown, which closes the database. The process then exits 0.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import importlib.util
import logging
import signal
import socket
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import uvicorn
import uvicorn.config

from .._exceptions import ConfigurationError
from ..analysis.anomaly import DetectorConfig
from ..storage.base import EventStorage
from ..storage.sqlite import SqliteStorage, Writer
from .app import create_app
from .auth import Auth
from .budget_file import load_budgets
from .context import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES

__all__ = ["LOG_LEVELS", "ServeOptions", "ServeError", "serve"]

logger: Final = logging.getLogger("llmtally.server")

LOG_LEVELS: Final = ("critical", "error", "warning", "info", "debug")
_GC_THRESHOLD: Final = 10_000


class ServeError(Exception):
    """The server could not start; ``exit_code`` is 2 for bad usage, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """Everything ``llmtally serve`` is told on its command line."""

    db: str
    host: str = "127.0.0.1"
    port: int = 8088
    insecure_no_auth: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    busy_timeout_ms: int = 5_000
    writer: Writer = "thread"
    """SQLite only: where ingest writes run (``SqliteStorage(writer=...)``)."""
    log_level: str = "info"
    access_log: bool = False
    shutdown_timeout: int = 30
    detect_interval_s: float | None = 60.0
    """Seconds between anomaly-detection passes; ``None``: no detection."""
    anomaly_sensitivity: float = DetectorConfig().sensitivity
    budgets: Path | None = None


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a graceful shutdown begins: live event
    streams never end on their own, and would otherwise hold the shutdown up until
    ``shutdown_timeout``."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


class _Stopped(BaseException):
    """Raised by our signal handler once uvicorn hands the signal back after shutdown."""


def _on_signal(signum: int, frame: types.FrameType | None) -> None:
    raise _Stopped(signum)


def _event_loop() -> Literal["uvloop", "asyncio"]:
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def _http_impl() -> Literal["httptools", "h11"]:
    # httptools (a dependency of the server extra) parses HTTP in C: ~1,700-2,500 fewer
    # instructions per ingested event than h11 at 500-event requests
    # (bench/collector_instructions.py --parts serve). h11 remains the fallback.
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def _log_config(level: str) -> dict[str, Any]:
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["llmtally"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _check_storage(storage: EventStorage) -> None:
    await storage.open()
    await storage.close()


def _is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def _redacted(db: str) -> str:
    """``db`` without a password, for logs and error messages."""
    if not _is_postgres(db):
        return db
    scheme, _, rest = db.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return db
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else db


def _storage_for(options: ServeOptions) -> EventStorage:
    storage: EventStorage
    check: EventStorage
    if _is_postgres(options.db):
        try:
            from ..storage.postgres import PostgresStorage
        except ImportError as exc:
            raise ServeError(
                f"PostgreSQL needs the postgres extra (pip install 'llmtally[postgres]'): {exc}",
                exit_code=2,
            ) from None
        storage = check = PostgresStorage(options.db, busy_timeout_ms=options.busy_timeout_ms)
    else:
        # ":memory:" has no file for a writer process to open.
        writer = "thread" if options.db == ":memory:" else options.writer
        storage = SqliteStorage(options.db, busy_timeout_ms=options.busy_timeout_ms, writer=writer)
        # Checked without starting a writer process: the one that serves starts its own.
        check = SqliteStorage(options.db, busy_timeout_ms=options.busy_timeout_ms)
    try:
        # Open once before serving so that a bad path or a failed migration is one
        # clear line and exit 1, not a lifespan traceback. Runs before any server loop.
        asyncio.run(_check_storage(check))
    except Exception as exc:
        raise ServeError(f"cannot open database {_redacted(options.db)}: {exc}") from None
    return storage


def _tune_gc() -> None:
    """Freeze what start-up allocated and raise the first generation's threshold.

    Why: an ingest request of 500 events holds several thousand container objects alive
    at once (decoded events, rows, rollups), none of which form cycles. With the default
    threshold (700) each request set off a few young collections, and the survivors
    promoted into older generations that were walked again with every module and
    function object the collector imported. Frozen, start-up's objects are never walked;
    at 10,000 a request's transient objects no longer reach the threshold. Measured with
    ``gc.callbacks`` over 100,000 events (``bench/collector_ingest.py``): 250-280
    collections took 75-85 ms before (~0.8 us per event); after, one young collection,
    under 2 ms. Cycles are still collected, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, *gc.get_threshold()[1:])


def serve(options: ServeOptions, environ: dict[str, str]) -> int:
    """Serve until stopped; returns the exit code (0 after a graceful stop).

    ``options.db`` is a SQLite file or a ``postgresql://`` URL (many collectors may share
    one PostgreSQL database). Raises ``ServeError`` when the server cannot start: no
    tokens configured and no ``--insecure-no-auth`` (exit code 2), a bad budgets file
    (2), a PostgreSQL URL without the postgres extra (2), a database that cannot be
    opened (1). Tokens come from ``environ``; they and database passwords are never
    logged.
    """
    try:
        auth = Auth.from_env(environ, insecure=options.insecure_no_auth)
        budgets = load_budgets(options.budgets) if options.budgets is not None else []
    except ConfigurationError as exc:
        raise ServeError(str(exc), exit_code=2) from None
    try:
        storage = _storage_for(options)
        app = create_app(
            storage,
            auth=auth,
            max_body_bytes=options.max_body_bytes,
            max_batch=options.max_batch,
            body_timeout_s=options.body_timeout_s,
            own_storage=True,
            detect_interval_s=options.detect_interval_s,
            detector_config=DetectorConfig(sensitivity=options.anomaly_sensitivity),
            budgets=budgets,
        )
    except ValueError as exc:
        raise ServeError(str(exc), exit_code=2) from None
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        loop=_event_loop(),
        http=_http_impl(),
        lifespan="on",
        access_log=options.access_log,
        log_level=options.log_level,
        log_config=_log_config(options.log_level),
        timeout_graceful_shutdown=options.shutdown_timeout,
        server_header=False,
    )
    server = _Server(config, app.state.llmtally.live.close)
    config.load()  # imports the loop and protocol modules now, before the freeze
    _tune_gc()
    url = _url(options.host, options.port)
    if auth.insecure:
        logger.warning(
            "INSECURE: --insecure-no-auth is set: every endpoint at %s is open to anyone "
            "who can reach it, with no token",
            url,
        )
    logger.info(
        "llmtally collector on %s (db %s, %d API tokens, %d budgets, loop %s, http %s)",
        url,
        _redacted(options.db),
        auth.token_count,
        len(budgets),
        config.loop,
        config.http,
    )
    # uvicorn installs its own handlers while serving and, after a graceful shutdown,
    # re-raises the signal it caught against the previous handler. Ours turns that into
    # a normal return (exit 0) instead of death by SIGTERM.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except _Stopped:
        return 0
    except SystemExit as exc:  # uvicorn exits on bind errors and failed startup
        return 0 if exc.code in (None, 0) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
