"""``LlmTallyTransport``: record every OpenAI/Anthropic call an httpx2 client makes.

::

    import httpx2, openai
    from llmtally.integrations.httpx import LlmTallyTransport

    transport = LlmTallyTransport(store, agent_id="agent-7")
    client = openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=transport))

The official ``openai`` (≥ 3) and ``anthropic`` (≥ 2) SDKs are built on httpx2 and accept
``http_client=httpx2.AsyncClient(transport=...)``; so does any code using httpx2 directly.

What is recorded: ONE event per ``POST`` whose path ends in ``/chat/completions``,
``/completions``, ``/responses``, ``/embeddings`` (OpenAI and compatible servers) or
``/messages`` (Anthropic), with its usage, cost, duration and, for streams, TTFT, ITL and
tokens/s (see ``_watch``). Every other request passes through untouched. The event is
recorded when the response body ends (or the caller closes it, or it fails):

- a response with status ≥ 400 → ``LlmRequestFailed``: ``error_code`` is the provider's
  error code (OpenAI ``error.code``, else ``error.type``; Anthropic ``error.type``), or
  ``http_<status>`` for a body without one; ``status_code`` is the status;
- an error event inside a 200 stream (Anthropic ``error``, Responses ``error`` /
  ``response.failed``, an OpenAI ``{"error": ...}`` chunk) → failed with its code;
- no response: ``timeout``, ``connect_error``, ``network_error``; the caller giving up
  (closing the body before its end, or being cancelled) → ``client_closed``; these keep
  the tokens seen so far, ``usage_missing`` when the final usage was not seen. A stream
  closed or broken after its end marker or final usage (``[DONE]``, the usage chunk,
  ``message_stop``, ``response.completed``) counts as completed.

``model`` is the response's (``gpt-4o-mini-2024-07-18``), else the request's. ``endpoint``
is the URL path. ``provider`` is inferred from the model name (see ``infer_provider``).

The caller receives exactly the bytes and chunks the wrapped transport produced — the same
``bytes`` objects, at the same moments. Bodies are watched, not buffered: an SSE stream
is parsed incrementally (bounded per event), a JSON body is copied up to
``max_body_bytes`` (beyond that, only its first and last 16 KiB are kept and scanned for
``model`` and ``usage``). The request body is parsed only when it is already in memory
(``bytes`` content, as the SDKs send) and at most ``max_request_bytes`` long; a streaming
upload is never touched.

Analytics never fail a request: every exception inside the recording is caught, counted
in ``transport.counters`` and logged at a bounded rate; a full store drops the event
(``record_nowait``, counted) instead of delaying the response.

Attribution: ``agent_id``/``provider_id`` are defaults; inside ``attribution(...)`` or a
request handled by ``LlmTallyMiddleware``, the request's values override them.

Correlation: the event's ``correlation_id``/``parent_event_id`` are the scope's (the
inbound request's ``x-correlation-id`` or ``traceparent``, or ``attribution(...)``'s),
else the outgoing request's own ``x-correlation-id`` or ``traceparent`` header.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import AsyncGeneratorType, TracebackType
from typing import TYPE_CHECKING, Final, Self

import anyio
import httpx2

from ..events import LlmRequestCompleted, LlmRequestFailed
from ._bodies import request_model, scan_large_body
from ._context import RequestScope, attribution, current_scope
from ._correlation import from_headers
from ._record import Counters, build_event, classify_exception, resolve_provider
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._usage import ApiKind, Usage, classify_path
from ._watch import DEFAULT_MAX_BODY_BYTES, Observed, ResponseWatcher

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["LlmTallyTransport", "attribution"]

DEFAULT_MAX_REQUEST_BYTES: Final = 1 << 20
_EDGE: Final = 16_384
_NO_USAGE: Final = Usage()
_perf_ns = time.perf_counter_ns


class LlmTallyTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2.AsyncBaseTransport`` that records LLM calls into ``store`` (see the
    module docstring) and otherwise behaves exactly like ``wrapped``.

    Args:
        store: an open ``EventStore`` (events are offered with ``record_nowait``).
        wrapped: the transport doing the I/O; default ``httpx2.AsyncHTTPTransport()``.
            Closing this transport closes it.
        agent_id, provider_id: default attribution of the recorded events.
        provider: the provider of every call (e.g. ``"azure"``); default: inferred from
            the model name, else from an official API host, else ``"unknown"``.
        max_request_bytes: request bodies up to this size are parsed for ``model``;
            larger ones are scanned at both ends.
        max_body_bytes: JSON response bodies up to this size are parsed whole.
        max_event_bytes: an SSE event larger than this is skipped (counted by no one:
            its usage, if any, is missed and the call shows ``usage_missing``).
    """

    def __init__(
        self,
        store: EventStore,
        wrapped: httpx2.AsyncBaseTransport | None = None,
        *,
        agent_id: str | None = None,
        provider_id: str | None = None,
        provider: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.store = store
        self.wrapped = wrapped if wrapped is not None else httpx2.AsyncHTTPTransport()
        self.agent_id = agent_id
        self.provider_id = provider_id
        self.provider = provider
        self.max_request_bytes = max_request_bytes
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.counters = Counters("httpx2 transport")

    async def __aenter__(self) -> Self:
        await self.wrapped.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.wrapped.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.wrapped.aclose()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` through the wrapped transport; watch it if it is an LLM call.

        Raises whatever the wrapped transport raises, unchanged; never raises for
        analytics reasons.
        """
        if request.method != "POST":
            return await self.wrapped.handle_async_request(request)
        path = request.url.path
        kind = classify_path(path)
        if kind is None:
            return await self.wrapped.handle_async_request(request)
        try:
            call = _Call(self, request, kind, path)
        except Exception as exc:
            self.counters.error("reading the request", exc)
            return await self.wrapped.handle_async_request(request)
        try:
            response = await self.wrapped.handle_async_request(request)
        except BaseException as exc:
            call.fail(exc)
            raise
        try:
            call.respond(response)
            stream = response.stream
            assert isinstance(stream, httpx2.AsyncByteStream)
            response.stream = _WatchedStream(stream, call)
        except Exception as exc:
            self.counters.error("watching the response", exc)
        return response


class _Call:
    """One LLM call in flight: what the request said, and the response's watcher."""

    __slots__ = (
        "done",
        "endpoint",
        "headers",
        "kind",
        "request_body",
        "scope",
        "start_ns",
        "status",
        "transport",
        "url",
        "watcher",
    )

    def __init__(
        self, transport: LlmTallyTransport, request: httpx2.Request, kind: ApiKind, path: str
    ) -> None:
        self.start_ns = _perf_ns()
        self.transport = transport
        self.kind = kind
        self.endpoint = path
        self.url = request.url  # its host is looked at only if the model says nothing
        self.status: int | None = None
        self.watcher: ResponseWatcher | None = None
        self.done = False
        # The body is parsed only if the response does not name the model (errors): keep
        # a reference to the bytes the request already holds (no copy).
        self.request_body = b""
        if isinstance(request.stream, httpx2.ByteStream):
            try:  # noqa: SIM105 - cheaper than contextlib.suppress on this hot path
                self.request_body = request.content
            except httpx2.RequestNotRead:
                pass
        self.scope: RequestScope | None = current_scope()
        if self.scope is not None:
            self.scope.upstream_calls += 1
        self.headers = request.headers  # for a correlation id, read when recording

    def request_model(self) -> str | None:
        """The ``model`` of the request body (bounded: a large body is scanned at its ends)."""
        body = self.request_body
        if not body:
            return None
        if len(body) > self.transport.max_request_bytes:
            return scan_large_body(body[:_EDGE], body[-_EDGE:])[0]
        return request_model(body) if body[:1] == b"{" else None

    def respond(self, response: httpx2.Response) -> None:
        self.status = status = response.status_code
        content_type = content_encoding = None
        # One pass over httpx2's (name, lowercased name, value) list: Headers.get decodes
        # every header, Headers.raw copies the list (and names would need lowering).
        for _, name, value in response.headers._list:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-encoding":
                content_encoding = value.decode("latin-1")
        t = self.transport
        self.watcher = ResponseWatcher(
            self.kind,
            status=status,
            content_type=content_type,
            content_encoding=content_encoding,
            start_ns=self.start_ns,
            max_body_bytes=t.max_body_bytes,
            max_event_bytes=t.max_event_bytes,
        )

    def feed(self, chunk: bytes) -> None:
        watcher = self.watcher
        if watcher is not None:
            try:
                watcher.feed(chunk, _perf_ns())
            except Exception as exc:
                self.watcher = None  # stop watching; the call is still recorded
                self.transport.counters.error("parsing the response", exc)

    def fail(self, exc: BaseException) -> None:
        try:
            code = classify_exception(exc, anyio.get_cancelled_exc_class())
            message = f"{type(exc).__name__}: {exc}" if code != "client_closed" else None
        except Exception as inner:
            self.transport.counters.error("classifying an error", inner)
            code, message = "error", None
        self.finish(code, message)

    def finish(self, error_code: str | None = None, error_message: str | None = None) -> None:
        """Record the call (once): completed, or failed with ``error_code`` or its status."""
        if self.done:
            return
        self.done = True
        t = self.transport
        try:
            end = _perf_ns()
            obs: Observed | None = None
            if self.watcher is not None:
                try:
                    obs = self.watcher.finish(end)
                except Exception as exc:
                    t.counters.error("parsing the response", exc)
            status = self.status
            model = (obs.model if obs is not None else None) or self.request_model() or "unknown"
            usage = None if obs is None else obs.usage
            usage_missing = True if obs is None else obs.usage_missing
            status_code = None
            if error_code is not None and self.watcher is not None and self.watcher.complete:
                # Closed or broken after the stream said it was done ([DONE], the final
                # usage, message_stop, response.completed): the call completed.
                error_code = error_message = None
            if status is not None and status >= 400:
                status_code = status
                error_code = (obs.error_code if obs is not None else None) or f"http_{status}"
                error_message = (
                    obs.error_message if obs is not None else None
                ) or f"{status} {httpx2.codes.get_reason_phrase(status)}"
                usage_missing = False  # providers bill nothing for a refused request
            elif obs is not None and obs.error_code is not None:
                # An error event in the stream explains the end better than the caller
                # closing because of it, or a read failing after it.
                error_code, error_message = obs.error_code, obs.error_message
            elif status is None:
                usage_missing = False  # no response: nothing was consumed
            scope = self.scope
            agent_id = (scope.agent_id if scope is not None else None) or t.agent_id
            provider_id = (scope.provider_id if scope is not None else None) or t.provider_id
            provider = t.provider or resolve_provider(model, self.url)
            duration_ms = (end - self.start_ns) / 1e6
            correlation_id: str | None
            if scope is not None and scope.correlation_id is not None:
                correlation_id, parent_event_id = scope.correlation_id, scope.parent_event_id
            else:
                correlation_id, parent_event_id = from_headers(self.headers.raw)
            event = build_event(
                t.store,
                model=model,
                provider=provider,
                usage=usage,
                usage_missing=usage_missing,
                agent_id=agent_id,
                provider_id=provider_id,
                duration_ms=duration_ms,
                observed=obs,
                endpoint=self.endpoint,
                error_code=error_code,
                error_message=error_message,
                status_code=status_code,
                correlation_id=correlation_id,
                parent_event_id=parent_event_id,
            )
            t.counters.emit(t.store, event)
            if scope is not None:
                p = event.payload
                assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
                scope.upstream_done(
                    provider=p.provider,
                    mode=self.kind.value,
                    model=p.model,
                    usage=usage or _NO_USAGE,
                    usage_missing=usage_missing,
                    duration_ms=duration_ms,
                )
        except Exception as exc:
            t.counters.error("recording the call", exc)


class _WatchedStream(httpx2.AsyncByteStream):
    """The response body, chunk for chunk as the wrapped transport yields it, watched.

    Iterating is an async generator, like httpx2's own stream wrappers: per chunk that
    costs less than a class whose ``__anext__`` is a coroutine, and the end of the body
    raises no exception through Python code. httpx2 closes the generator when it stops
    reading (``GeneratorExit`` at the ``yield``: ``client_closed`` unless complete); the
    wrapped transport's iterator is closed in turn, as httpx2 does.
    """

    __slots__ = ("_call", "_inner")

    def __init__(self, inner: httpx2.AsyncByteStream, call: _Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        iterator = self._inner.__aiter__()
        try:
            async for chunk in iterator:
                call.feed(chunk)
                yield chunk
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            if isinstance(iterator, AsyncGeneratorType):
                await iterator.aclose()
        call.finish()

    async def aclose(self) -> None:
        """Close the body; before its end, the call is recorded as ``client_closed``."""
        self._call.finish("client_closed")
        await self._inner.aclose()
