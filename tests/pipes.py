"""A child process's output, read as it comes, so tests wait for what the child says.

A child that is ready says so (uvicorn logs ``Uvicorn running on ...`` once it listens;
``llmtally tail`` prints ``following ...`` once subscribed; ``llmtally demo
--keep-serving`` prints ``Ctrl-C to stop``). ``PipeReader`` collects one pipe (or a pty's
master) in a thread — so the child never blocks on a full pipe — optionally copying it to
a log file, and ``wait_for`` blocks on a condition until the expected text arrives: no
polling, and a clear failure naming what was awaited, with the output so far, when the
child ends first or the deadline passes.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import threading
from pathlib import Path
from typing import IO, Any

__all__ = ["PipeReader"]


class PipeReader:
    """Collects what a child writes to ``pipe`` (a file object or a raw fd, which the
    reader then owns and closes at end of file). ``tee``: also append it, as it comes,
    to this file. ``name`` labels failures."""

    def __init__(self, pipe: IO[Any] | int, *, name: str, tee: Path | None = None) -> None:
        self.name = name
        self._pipe = pipe
        self._fd = pipe if isinstance(pipe, int) else pipe.fileno()
        self._tee = tee.open("ab") if tee is not None else None
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        self._text = ""
        self._pos = 0  # where the next ``wait_for`` starts looking
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"read {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self._fd, 65536)
                except OSError as exc:  # a pty's master once the child side is closed
                    if exc.errno != errno.EIO:
                        raise
                    chunk = b""
                if self._tee is not None and chunk:
                    self._tee.write(chunk)
                    self._tee.flush()
                with self._changed:
                    self._text += self._decode(chunk, final=not chunk)
                    if not chunk:
                        self._closed = True
                    self._changed.notify_all()
                if not chunk:
                    return
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()
            if self._tee is not None:
                self._tee.close()
            if isinstance(self._pipe, int):
                os.close(self._pipe)
            else:
                self._pipe.close()

    def text(self) -> str:
        """Everything read so far."""
        with self._changed:
            return self._text

    def wait_for(self, expected: str | re.Pattern[str], timeout: float) -> str:
        """Wait until ``expected`` (a literal text, or a pattern) appears after what the
        previous ``wait_for`` matched; returns the match. Raises ``AssertionError`` if
        the pipe closes first or ``timeout`` seconds pass."""
        pattern = re.compile(re.escape(expected)) if isinstance(expected, str) else expected
        found: re.Match[str] | None = None

        def seen() -> bool:
            nonlocal found
            found = pattern.search(self._text, self._pos)
            return found is not None or self._closed

        with self._changed:
            self._changed.wait_for(seen, timeout)
            if found is None:
                why = "closed" if self._closed else f"said nothing matching within {timeout} s"
                raise AssertionError(
                    f"waited for {pattern.pattern!r} from {self.name}, which {why}; "
                    f"output:\n{self._text}"
                )
            self._pos = found.end()
            return found.group(0)

    def wait_closed(self, timeout: float) -> str:
        """Wait for the end of file (the child and any child of its holding the pipe have
        exited); returns everything read. Raises ``AssertionError`` after ``timeout``."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"{self.name} still open after {timeout} s")
        return self.text()
