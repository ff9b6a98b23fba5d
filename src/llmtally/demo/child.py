"""The demo's child processes: ``python -m llmtally.demo.child ROLE [ARGS...]``.

Roles: ``upstream`` (the fake OpenAI/Anthropic API; prints its URL), ``collector``
(``llmtally serve`` with ARGS) and ``load`` (the clients; prints a ``LoadReport``).

Every child holds a lifeline: its stdin is a pipe from the demo, and when that pipe
closes — the demo ended, or died without cleaning up — the child sends itself SIGTERM
and stops gracefully. So no child outlives the demo, whatever ends it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["main"]

ROLES = ("upstream", "collector", "load")


def _hold_lifeline() -> None:
    def watch() -> None:
        # os.read, not sys.stdin: a buffered reader's lock held by a daemon thread
        # aborts the interpreter at exit.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _upstream(argv: Sequence[str]) -> int:
    from ._aio import run_async
    from .fake_upstream import FakeUpstream

    async def serve() -> None:
        async with FakeUpstream(echo_model=True, record=False, log_level="critical") as fake:
            print(fake.url, flush=True)
            await fake.stopped.wait()  # uvicorn stops on SIGTERM/SIGINT

    # uvicorn hands the signal back to the previous handler once it has stopped.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    run_async(serve)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ROLES:
        print(f"usage: python -m llmtally.demo.child {{{','.join(ROLES)}}} ...", file=sys.stderr)
        return 2
    _hold_lifeline()
    role, rest = args[0], args[1:]
    if role == "upstream":
        return _upstream(rest)
    if role == "collector":
        from ..cli import main as cli_main

        return cli_main(["serve", *rest])
    from .load import main as load_main

    return load_main(rest)


if __name__ == "__main__":
    sys.exit(main())
