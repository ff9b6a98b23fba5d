"""An incremental, bounded server-sent-events parser that watches bytes passing by.

``SseParser.feed(chunk)`` takes the body in whatever pieces the network delivers (an
event, a line, a UTF-8 character or a ``\\r\\n`` pair may be split anywhere) and returns
the ``data`` of every event completed by that piece. It never holds more than
``max_event_bytes`` of one event: a longer line or event is skipped (counted in
``overflows``) up to the next blank line, and parsing resumes with the following event.

Only what the integrations need is kept: the ``data`` lines of an event, joined by
``\\n`` (the WHATWG rule). ``event``, ``id``, ``retry`` and comment lines are ignored;
every provider we read repeats the event name in the JSON ``type``. Lines end with
``\\r\\n``, ``\\n`` or ``\\r``. An event still open at the end of the body is returned by
``close()`` (the specification discards it; a final usage chunk that lost its blank line
is worth keeping for analytics).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SseParser"]

DEFAULT_MAX_EVENT_BYTES: Final = 1 << 20


class SseParser:
    """Feed body bytes in order; get back the ``data`` payload of each complete event."""

    __slots__ = ("_buf", "_cr", "_data", "_data_len", "_skipping", "max_event_bytes", "overflows")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be at least 1")
        self.max_event_bytes = max_event_bytes
        self.overflows = 0
        self._buf = bytearray()  # the unfinished line (bounded by max_event_bytes)
        self._cr = False  # the previous piece ended with "\r" (its "\n" may come next)
        self._data: list[bytes] | None = None  # data lines of the open event
        self._data_len = 0
        self._skipping = False  # inside an oversized event: ignore lines up to a blank one

    def feed(self, chunk: bytes) -> list[bytes]:
        """Parse the next piece of the body; returns the events it completed (maybe none)."""
        events: list[bytes] = []
        if not chunk:
            return events
        if self._cr or b"\r" in chunk:  # rare: normalise "\r\n" and "\r" to "\n"
            if self._cr and chunk[:1] == b"\n":
                chunk = chunk[1:]  # the "\r" that ended the previous piece ended this line
            self._cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.find(b"\n")
        buf = self._buf
        if end < 0:  # no line ends here: just extend the open line (never re-scanned)
            buf += chunk
            if len(buf) > self.max_event_bytes:
                buf.clear()
                self._skip()  # a line longer than any event we keep
            return events
        if buf:
            buf += chunk[:end]
            first = bytes(buf)
            buf.clear()
        else:
            first = chunk[:end]
        lines = chunk[end + 1 :].split(b"\n")
        tail = lines.pop()
        self._line(first, events)
        for line in lines:
            self._line(line, events)
        if tail:
            if len(tail) > self.max_event_bytes:
                self._skip()
            else:
                buf += tail
        return events

    def close(self) -> list[bytes]:
        """The body ended: returns the event still open, if any (and resets the parser)."""
        events: list[bytes] = []
        if self._buf:
            self._line(bytes(self._buf), events)
            self._buf.clear()
        if self._data is not None and not self._skipping:
            events.append(b"\n".join(self._data))
        self._data = None
        self._data_len = 0
        self._skipping = False
        self._cr = False
        return events

    def _skip(self) -> None:
        if not self._skipping:
            self.overflows += 1
        self._skipping = True
        self._data = None
        self._data_len = 0

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:  # a blank line ends the event
            if self._skipping:
                self._skipping = False
            elif self._data is not None:
                data = self._data
                events.append(data[0] if len(data) == 1 else b"\n".join(data))
            self._data = None
            self._data_len = 0
            return
        if line[:5] == b"data:":
            value = line[6:] if line[5:6] == b" " else line[5:]
        elif line == b"data":
            value = b""
        else:
            return  # event, id, retry, comments, unknown fields
        if self._skipping:
            return
        self._data_len += len(value) + 1
        if self._data_len > self.max_event_bytes:
            self._skip()
        elif self._data is None:
            self._data = [value]
        else:
            self._data.append(value)
