"""Watch one LLM response body pass by and say what it meant: model, usage, timing, error.

``ResponseWatcher.feed(chunk, now_ns)`` sees each piece of the body as it travels (the
caller forwards the piece untouched); ``finish(end_ns)`` returns an ``Observed``. An SSE
body (``text/event-stream``) is parsed event by event with a bounded ``SseParser``; any
other body is copied up to a bound (``BodyCopy``) and parsed once at the end. Memory per
watched response is bounded by ``max_body_bytes`` + ``max_event_bytes``.

Streams: TTFT is the arrival of the first content delta (text, tool call, refusal or
reasoning), ITL and tokens/s come from the later content deltas (``StreamTimings``, one
chunk per delta). When the final usage is known and deltas carried more than one token
each (Anthropic sends several per delta), ITL and tokens/s are rescaled by the mean
visible tokens per delta — (output − hidden reasoning) / deltas — the GenAI-Perf per-token
convention under the assumption that deltas carry equal numbers of tokens.

A stream whose final usage never arrived is ``usage_missing``: its output is the number of
content deltas seen (a lower bound, never a guess beyond what was seen) and its input is
what the provider reported before the end (Anthropic's ``message_start``), else 0.
"""

from __future__ import annotations

import msgspec

from ..analysis.streaming import StreamTimings
from ._bodies import BodyCopy, scan_large_body
from ._decode import Decoder, body_decoder, identity
from ._sse import DEFAULT_MAX_EVENT_BYTES, SseParser
from ._usage import (
    ApiKind,
    Usage,
    WireUsage,
    decode_ok_body,
    decode_payload,
    error_of,
    merge_usage,
    normalize_usage,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Observed", "ResponseWatcher"]

DEFAULT_MAX_BODY_BYTES = 256 * 1024

_NS_PER_MS = 1_000_000


class Observed(msgspec.Struct, frozen=True, gc=False):
    """What a response said. ``usage`` is ``None`` only when nothing at all was reported.

    (A Struct made positionally: one per LLM call, several times cheaper than a NamedTuple
    made with keywords.)"""

    stream: bool
    model: str | None
    usage: Usage | None
    usage_missing: bool
    content_chunks: int
    ttft_ms: float | None
    itl_mean_ms: float | None
    itl_p95_ms: float | None
    tokens_per_s: float | None
    error_code: str | None
    error_message: str | None


class ResponseWatcher:
    """Parses one response body as it passes; see the module docstring.

    ``feed`` and ``finish`` may raise on a body we cannot make sense of; the caller stops
    watching (and counts it) — the body itself is never affected.
    """

    __slots__ = (
        "_copy",
        "_decode",
        "_final",
        "_parser",
        "_timings",
        "_wire",
        "chunks",
        "error_code",
        "error_message",
        "kind",
        "model",
        "sse",
        "status",
        "terminal",
    )

    def __init__(
        self,
        kind: ApiKind,
        *,
        status: int,
        content_type: str | None,
        content_encoding: str | None,
        start_ns: int,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.kind = kind
        self.status = status
        self.sse = sse = (
            status < 400
            and content_type is not None
            and content_type[:17].lower() == "text/event-stream"
        )
        self._decode: Decoder | None = (
            identity if content_encoding is None else body_decoder(content_encoding)
        )
        if sse:
            self._parser: SseParser | None = SseParser(max_event_bytes)
            self._copy: BodyCopy | None = None
            self._timings: StreamTimings | None = StreamTimings()
            self._timings.start(start_ns)
        else:
            self._parser = self._timings = None
            self._copy = BodyCopy(max_body_bytes)
        self.model: str | None = None
        self._wire: WireUsage | None = None
        self._final = False  # the stream's final usage arrived
        self.chunks = 0
        self.terminal = False  # the stream's end marker arrived ([DONE], message_stop, ...)
        self.error_code: str | None = None
        self.error_message: str | None = None

    @property
    def complete(self) -> bool:
        """The stream said it was done: its end marker or its final usage arrived."""
        return self.terminal or self._final

    def feed(self, chunk: bytes, now_ns: int) -> None:
        """The next piece of the body (still content-encoded) arrived at ``now_ns``."""
        decode = self._decode
        if decode is None:
            return
        parser = self._parser
        if parser is None:
            copy = self._copy
            assert copy is not None
            if decode is identity:  # the common case: no decoder in between
                copy.feed(chunk)
            else:
                for piece in decode(chunk):
                    copy.feed(piece)
            return
        for piece in decode(chunk):
            for data in parser.feed(piece):
                self._event(data, now_ns)

    def _event(self, data: bytes, now_ns: int) -> None:
        if data[:1] != b"{":
            if data == b"[DONE]":
                self.terminal = True
            return
        p = decode_payload(data)
        if p is None:
            return
        kind = self.kind
        if p.has_content(kind):
            self.chunks += 1
            assert self._timings is not None
            self._timings.token(now_ns)
        if kind is ApiKind.MESSAGES:
            inner = p.inner()
            if inner is not None:
                self.model = self.model or inner.model
                if inner.usage is not None:
                    self._wire = merge_usage(self._wire, inner.usage)
            elif p.type == "message_delta" and p.usage is not None:
                self._wire = merge_usage(self._wire, p.usage)
                self._final = True
            elif p.type == "message_stop":
                self.terminal = True
        elif kind is ApiKind.RESPONSES:
            r = p.response
            if r is not None:
                self.model = r.model or self.model
                if p.type in ("response.completed", "response.incomplete", "response.failed"):
                    self.terminal = True
                    if r.usage is not None:
                        self._wire = r.usage
                        self._final = True
        else:
            self.model = self.model or p.model
            if p.usage is not None:
                self._wire = p.usage
                self._final = True
        if p.error is not None or p.type in ("error", "response.failed"):
            code, message = error_of(p)
            self.error_code = code or "stream_error"
            self.error_message = message

    def finish(self, end_ns: int) -> Observed:
        """The body ended (or was abandoned) at ``end_ns``: what it said."""
        if self._parser is not None:
            if self._decode is not None:
                for data in self._parser.close():
                    self._event(data, end_ns)
            return self._stream_result(end_ns)
        return self._body_result()

    def _body_result(self) -> Observed:
        copy = self._copy
        assert copy is not None
        model = None
        wire = None
        if self._decode is not None and copy.size:
            if copy.truncated:
                model, wire, _ = scan_large_body(copy.head, copy.tail)
            else:
                body = copy.body
                ok = decode_ok_body(body) if self.status < 400 else None
                if ok is not None and not ok[2]:
                    model, wire, _ = ok
                else:  # an error answer: read it whole
                    p = decode_payload(body)
                    if p is not None:
                        model, wire = p.model, p.usage
                        self.error_code, self.error_message = error_of(p)
        usage = None if wire is None else normalize_usage(wire, self.kind)
        # stream, model, usage, usage_missing, content_chunks, ttft, itl mean/p95, tokens/s
        return Observed(
            False, model, usage, usage is None, 0, None, None, None, None,
            self.error_code, self.error_message,
        )  # fmt: skip

    def _stream_result(self, end_ns: int) -> Observed:
        timings = self._timings
        assert timings is not None
        result = timings.finish(end_ns)
        usage = None if self._wire is None else normalize_usage(self._wire, self.kind)
        missing = not self._final
        itl_mean, itl_p95, tps = result.itl_mean_ms, result.itl_p95_ms, result.tokens_per_s
        if missing:
            reported = 0 if usage is None else usage.output_tokens
            base = usage or Usage()
            usage = Usage(
                base.input_tokens,
                max(reported, self.chunks),
                base.cached_input_tokens,
                base.cache_write_input_tokens,
                base.reasoning_tokens,
            )
        elif usage is not None and self.chunks >= 2:
            hidden = usage.reasoning_tokens if self.kind is not ApiKind.MESSAGES else 0
            per_chunk = (usage.output_tokens - hidden) / self.chunks
            if per_chunk > 1.0:
                itl_mean = None if itl_mean is None else itl_mean / per_chunk
                itl_p95 = None if itl_p95 is None else itl_p95 / per_chunk
                tps = None if tps is None else tps * per_chunk
        return Observed(
            True, self.model, usage, missing, self.chunks, result.ttft_ms, itl_mean, itl_p95,
            tps, self.error_code, self.error_message,
        )  # fmt: skip


def ns_to_ms(ns: int) -> float:
    """Nanoseconds → milliseconds."""
    return ns / _NS_PER_MS
