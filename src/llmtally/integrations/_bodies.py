"""Request bodies and large bodies: read what we need, bounded, never the prompt.

``parse_request``/``request_model`` decode a JSON request body into the few fields the
integrations use (``messages``/``input`` only as raw slices, to count them).
``BodyCopy`` keeps a bounded copy of a body as it passes; ``scan_large_body`` finds
``model``, ``stream`` and ``usage`` in the first and last bytes of a body too large to
parse whole.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from ._usage import WireUsage, usage_decoder

__all__ = ["BodyCopy", "RequestFields", "parse_request", "request_model", "scan_large_body"]


class RequestFields(msgspec.Struct, gc=False):
    """What the integrations read from a request body: never the prompt itself.

    ``messages``/``input`` are decoded as raw slices only to count them.
    """

    model: str | None = None
    stream: bool | None = None
    messages: list[msgspec.Raw] | None = None
    input: str | list[msgspec.Raw] | None = None

    @property
    def message_count(self) -> int | None:
        """``len(messages)`` (chat, Anthropic), else the items of a Responses/embeddings
        ``input`` list (1 for a string input), else ``None``."""
        if self.messages is not None:
            return len(self.messages)
        if isinstance(self.input, list):
            return len(self.input)
        if isinstance(self.input, str):
            return 1
        return None


class _ModelOnly(msgspec.Struct, gc=False):
    # Everything but the model is skipped by the parser, not even sliced.
    model: str | None = None


_request_decoder: Final = msgspec.json.Decoder(RequestFields, strict=False)
_model_decoder: Final = msgspec.json.Decoder(_ModelOnly, strict=False)

_MODEL_RE: Final = re.compile(rb'(?<!\\)"model"\s*:\s*"([^"\\]{1,256})"')
_STREAM_RE: Final = re.compile(rb'(?<!\\)"stream"\s*:\s*(true|false)')
_USAGE_KEY: Final = b'"usage"'


def parse_request(body: bytes) -> RequestFields | None:
    """The fields of a JSON request body; ``None`` when it is not a JSON object."""
    try:
        return _request_decoder.decode(body)
    except msgspec.DecodeError:
        return None


def request_model(body: bytes) -> str | None:
    """Just the ``model`` of a JSON request body (cheapest); ``None`` if absent or invalid."""
    try:
        return _model_decoder.decode(body).model
    except msgspec.DecodeError:
        return None


class BodyCopy:
    """A bounded copy of a body: all of it up to ``max_bytes``; beyond, its first and last
    ``edge_bytes`` only (``truncated`` is then true). A body that arrives in one piece is
    kept as that piece, without copying."""

    __slots__ = ("_buf", "_first", "edge_bytes", "head", "max_bytes", "size", "truncated")

    def __init__(self, max_bytes: int, edge_bytes: int = 16_384) -> None:
        self.max_bytes = max_bytes
        self.edge_bytes = min(edge_bytes, max_bytes)
        self._first: bytes | None = None
        self._buf: bytearray | None = None
        self.head = b""
        self.size = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        """Add the next piece of the body."""
        self.size += len(data)
        buf = self._buf
        if buf is None:
            if self._first is None and len(data) <= self.max_bytes:
                self._first = data
                return
            buf = self._buf = bytearray(self._first or b"")
            self._first = None
        buf += data
        if self.truncated:
            if len(buf) > 2 * self.edge_bytes:
                del buf[: len(buf) - self.edge_bytes]
        elif len(buf) > self.max_bytes:
            self.truncated = True
            self.head = bytes(buf[: self.edge_bytes])
            del buf[: len(buf) - self.edge_bytes]

    @property
    def body(self) -> bytes:
        """The whole body (when not truncated)."""
        if self._first is not None:
            return self._first
        return b"" if self._buf is None else bytes(self._buf)

    @property
    def tail(self) -> bytes:
        """The last ``edge_bytes`` (when truncated)."""
        data = self._first if self._first is not None else (self._buf or b"")
        return bytes(data[-self.edge_bytes :])


def _balanced_object(buf: bytes, start: int) -> bytes | None:
    """The JSON object starting at ``buf[start] == b"{"``, by brace matching; ``None`` if it
    does not end inside ``buf``."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(buf)):
        c = buf[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return buf[start : i + 1]
    return None


def scan_large_body(head: bytes, tail: bytes) -> tuple[str | None, WireUsage | None, bool | None]:
    """``(model, usage, stream)`` found in the first and last bytes of a body too large to
    parse whole (a big embeddings answer, a request with images): providers put ``model``
    and ``usage`` at the top level, ``usage`` at the end."""
    model = stream = None
    for part in (head, tail):
        m = _MODEL_RE.search(part)
        if m is not None:
            model = m.group(1).decode("utf-8", "replace")
            break
    s = _STREAM_RE.search(head) or _STREAM_RE.search(tail)
    if s is not None:
        stream = s.group(1) == b"true"
    usage = None
    at = tail.rfind(_USAGE_KEY)
    while at >= 0 and usage is None:
        brace = tail.find(b"{", at + len(_USAGE_KEY))
        colon_gap = tail[at + len(_USAGE_KEY) : brace] if brace >= 0 else b"x"
        if brace >= 0 and colon_gap.strip() == b":":
            obj = _balanced_object(tail, brace)
            if obj is not None:
                try:
                    usage = usage_decoder.decode(obj)
                except msgspec.DecodeError:
                    usage = None
        at = tail.rfind(_USAGE_KEY, 0, at)
    return model, usage, stream
