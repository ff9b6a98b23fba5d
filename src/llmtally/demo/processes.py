"""The demo's child processes: start them, read what they print, always stop them.

``async with Children(log_dir) as children:`` — ``await children.start(role, args)``
runs ``python -m llmtally.demo.child ROLE ARGS`` in its own session (a Ctrl-C in the
terminal reaches the demo only, which stops the children in order), stdin a lifeline
pipe (see ``child``), stdout a pipe, stderr ``<log_dir>/<role>.log``. Leaving the block
stops every child still running — SIGTERM, then SIGKILL after ``stop_timeout`` — even
when the block failed or was cancelled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import httpx2
from anyio.abc import Process

__all__ = ["Child", "ChildFailed", "Children", "wait_healthy"]

_MAX_LINE = 64 * 1024


class ChildFailed(Exception):
    """A child process exited early or did not become ready; the message says which."""


class Child:
    """One running child: ``process``, its ``log`` file, and its stdout as lines."""

    def __init__(self, role: str, process: Process, log: Path) -> None:
        self.role = role
        self.process = process
        self.log = log
        self._buffer = b""

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the child's stderr (blocking read of a small local file:
        call it on error paths only)."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the child has used so far, from ``/proc`` (Linux);
        ``None`` where that cannot be read."""
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    async def read_line(self, within: float) -> str:
        """The next line the child prints; raises ``ChildFailed`` if it exits first or
        prints nothing ``within`` seconds."""
        assert self.process.stdout is not None
        with anyio.move_on_after(within):
            while b"\n" not in self._buffer:
                try:
                    self._buffer += await self.process.stdout.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    raise ChildFailed(
                        f"the {self.role} process exited ({self.log_tail() or 'no output'})"
                    ) from None
                if len(self._buffer) > _MAX_LINE:
                    raise ChildFailed(f"the {self.role} process printed an overlong line")
            line, _, self._buffer = self._buffer.partition(b"\n")
            return line.decode(errors="replace").strip()
        raise ChildFailed(f"the {self.role} process said nothing within {within:.0f}s")

    async def stop(self, grace: float) -> int:
        """SIGTERM (if still running), wait up to ``grace`` s, then SIGKILL; returns the
        exit code. Shielded: completes even while the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(grace):
                    await self.process.wait()
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
            await self.process.aclose()
        code = self.process.returncode
        assert code is not None
        return code


class Children:
    """Starts demo children and stops every one of them on exit (see the module doc)."""

    def __init__(self, log_dir: Path, *, stop_timeout: float = 15.0) -> None:
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self._running: list[Child] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._running:  # the latest first: clients before servers
            await self.stop(self._running[-1])

    async def start(
        self, role: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Child:
        """Start ``role``; returns at once (the child may still be starting)."""
        command = [sys.executable, "-m", "llmtally.demo.child", role, *args]
        log = self.log_dir / f"{role}.log"
        stderr = await anyio.to_thread.run_sync(log.open, "wb")
        with stderr:  # the child writes to its own copy of the descriptor
            process = await anyio.open_process(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=dict(os.environ if env is None else env),
                start_new_session=True,
            )
        child = Child(role, process, log)
        self._running.append(child)
        return child

    async def stop(self, child: Child) -> int:
        """Stop ``child`` now (see ``Child.stop``); returns its exit code."""
        try:
            return await child.stop(self.stop_timeout)
        finally:
            if child in self._running:
                self._running.remove(child)


async def wait_healthy(child: Child, url: str, within: float) -> None:
    """Poll ``url`` until it answers 200; raises ``ChildFailed`` if ``child`` exits or
    ``within`` seconds pass first. Polling a separate process's readiness, bounded in time."""
    with anyio.move_on_after(within):
        async with httpx2.AsyncClient(timeout=1.0) as client:
            while child.process.returncode is None:
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)
        raise ChildFailed(f"the {child.role} process exited ({child.log_tail() or 'no output'})")
    raise ChildFailed(f"the {child.role} process did not answer {url} within {within:.0f}s")
