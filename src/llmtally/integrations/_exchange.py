"""One request watched by ``LlmTallyMiddleware``: ``receive``/``send`` wrappers that observe
the messages passing (replaying the body read ahead), and the record made at the end."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from .._ids import new_event_id
from ._bodies import BodyCopy, RequestFields, parse_request, scan_large_body
from ._context import RequestScope
from ._correlation import from_headers
from ._record import build_event, clean_id, resolve_provider
from ._request_record import (
    MAX_HEADER,
    AuthMetadata,
    PerformanceMetrics,
    RequestMetadata,
    RequestRecord,
    ResponseMetadata,
    RoutingMetadata,
    anonymize_ip,
    api_key_id,
    resolve_client_ip,
)
from ._usage import Usage, classify_path
from ._watch import Observed, ResponseWatcher

if TYPE_CHECKING:
    from .asgi import LlmTallyMiddleware

__all__ = ["ASGIApp", "Exchange", "Message", "Receive", "Scope", "Send"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

_perf_ns = time.perf_counter_ns


class Exchange:
    """One tracked request: wraps ``receive``/``send`` to observe, and records at the end."""

    def __init__(self, mw: LlmTallyMiddleware, scope: Scope, receive: Receive, send: Send):
        self.start_ns = _perf_ns()
        self.timestamp_ms = mw.store.now_ms()
        self.mw = mw
        self.asgi_scope = scope
        self._receive = receive
        self._send = send
        self.path: str = scope.get("path", "")
        self.method: str = scope.get("method", "")
        self.kind = classify_path(self.path)
        self.body = BodyCopy(mw.max_body_bytes)
        self._replay: deque[Message] = deque()
        self.request_encoded = False
        self.status: int | None = None
        self.response_size = 0
        self.first_byte_ns: int | None = None
        self.complete_ns: int | None = None
        self.disconnected = False
        self.watcher: ResponseWatcher | None = None
        self.routing_from_headers: dict[str, str] = {}
        self.user_agent: str | None = None
        self.client_ip: str | None = None
        self.key_id: str | None = None
        self.label: str | None = None
        self.auth_method: str | None = None
        self._read_headers(scope)
        correlation_id, parent_event_id = from_headers(scope.get("headers", ()))
        self.scope = RequestScope(self.label, self.key_id, correlation_id, parent_event_id)

    # --- request side -----------------------------------------------------------------

    def _read_headers(self, scope: Scope) -> None:
        mw = self.mw
        forwarded: list[str] = []
        keys: dict[bytes, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = bytes(raw_name).lower()
            if name == b"user-agent":
                self.user_agent = raw_value.decode("latin-1")[:MAX_HEADER]
            elif name == b"x-forwarded-for":
                forwarded.append(raw_value.decode("latin-1"))
            elif name == b"content-encoding":
                self.request_encoded = raw_value.strip().lower() not in (b"", b"identity")
            elif name in mw.api_key_headers and name not in keys:
                keys[name] = raw_value.decode("latin-1").strip()
        client = scope.get("client")
        peer = None if not client else str(client[0])
        ip = resolve_client_ip(peer, ",".join(forwarded), mw.trusted_proxies)
        self.client_ip = anonymize_ip(ip) if ip is not None and mw.anonymize_ip else ip
        for header in mw.api_key_headers:
            value = keys.get(header)
            if not value:
                continue
            scheme, _, credential = value.partition(" ")
            if header == b"authorization":
                if not credential:
                    scheme, credential = "", value
                self.auth_method = scheme.lower() or "token"
            else:
                credential, self.auth_method = value, "header"
            credential = credential.strip()
            if not credential:
                continue
            if mw._secret is not None:
                self.key_id = api_key_id(credential, mw._secret)
            if mw.label_for_key is not None:
                try:
                    self.label = clean_id(mw.label_for_key(credential))
                except Exception as exc:
                    mw.counters.error("labelling an API key", exc)
            break

    async def read_ahead(self) -> None:
        """Receive the body's first messages, up to ``max_body_bytes``, before the app runs
        (so the model is known even when the app answers without reading), to be replayed
        to it unchanged; the rest of a larger body streams through as the app reads it."""
        limit = self.mw.max_body_bytes
        while True:
            message = await self._receive()
            self._replay.append(message)
            self._observe(message)
            if (
                message.get("type") != "http.request"
                or not message.get("more_body", False)
                or self.body.size >= limit
            ):
                return

    async def receive(self) -> Message:
        if self._replay:
            return self._replay.popleft()
        message = await self._receive()
        self._observe(message)
        return message

    def _observe(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.request":
            body = message.get("body", b"")
            if body:
                try:
                    self.body.feed(body)
                except Exception as exc:
                    self.mw.counters.error("copying the request body", exc)
        elif kind == "http.disconnect" and self.complete_ns is None:
            self.disconnected = True

    # --- response side ----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            message = self._start(message)
        elif kind == "http.response.body":
            self._body(message)
        try:
            await self._send(message)
        except BaseException:
            if self.complete_ns is None:
                self.disconnected = True
            raise

    def _start(self, message: Message) -> Message:
        try:
            self.status = int(message["status"])
            content_type = content_encoding = None
            routing = self.mw._routing_headers
            kept = []
            stripped = False
            for raw_name, raw_value in message.get("headers", ()):
                name = bytes(raw_name).lower()
                if name == b"content-type":
                    content_type = raw_value.decode("latin-1")
                elif name == b"content-encoding":
                    content_encoding = raw_value.decode("latin-1")
                elif name in routing:
                    self.routing_from_headers[routing[name]] = raw_value.decode("latin-1")
                    if self.mw.strip_routing_headers:
                        stripped = True
                        continue
                kept.append((raw_name, raw_value))
            if self.kind is not None:
                self.watcher = ResponseWatcher(
                    self.kind,
                    status=self.status,
                    content_type=content_type,
                    content_encoding=content_encoding,
                    start_ns=self.start_ns,
                    max_body_bytes=self.mw.max_body_bytes,
                    max_event_bytes=self.mw.max_event_bytes,
                )
            if stripped:
                return {**message, "headers": kept}
        except Exception as exc:
            self.mw.counters.error("reading the response head", exc)
        return message

    def _body(self, message: Message) -> None:
        now = _perf_ns()
        body = message.get("body", b"")
        if body:
            if self.first_byte_ns is None:
                self.first_byte_ns = now
            self.response_size += len(body)
            watcher = self.watcher
            if watcher is not None:
                try:
                    watcher.feed(body, now)
                except Exception as exc:
                    self.watcher = None
                    self.mw.counters.error("parsing the response", exc)
        if not message.get("more_body", False):
            self.complete_ns = now

    # --- the end ----------------------------------------------------------------------

    def finish(self, failure: BaseException | None) -> None:
        mw = self.mw
        try:
            record = self._finish(failure)
        except Exception as exc:
            mw.counters.error("recording the request", exc)
            return
        if mw.on_request is not None:
            try:
                mw.on_request(record)
            except Exception as exc:
                mw.counters.error("calling on_request", exc)

    def _request_fields(self) -> RequestFields:
        body = self.body
        if self.request_encoded or not body.size:
            return RequestFields()
        if body.truncated:
            model, _, stream = scan_large_body(body.head, body.tail)
            return RequestFields(model=model, stream=stream)
        return parse_request(body.body) or RequestFields()

    def _finish(self, failure: BaseException | None) -> RequestRecord:
        mw = self.mw
        end = self.complete_ns or _perf_ns()
        obs: Observed | None = None
        if self.watcher is not None:
            try:
                obs = self.watcher.finish(end)
            except Exception as exc:
                mw.counters.error("parsing the response", exc)
        fields = self._request_fields()
        scope = self.scope
        status = self.status

        # Outcome.
        error_code = error_message = None
        if failure is not None and not isinstance(failure, anyio.get_cancelled_exc_class()):
            error_code, error_message = "app_error", f"{type(failure).__name__}: {failure}"
        elif failure is not None or self.disconnected or self.complete_ns is None:
            error_code = "client_closed"
        elif status is not None and status >= 400:
            error_code = (obs.error_code if obs is not None else None) or f"http_{status}"
            error_message = obs.error_message if obs is not None else None
        elif obs is not None and obs.error_code is not None:
            error_code, error_message = obs.error_code, obs.error_message
        if status is None and error_code == "app_error":
            status = 500  # what the server answers for an app that raised before answering

        # Tokens: what the response said, else what the upstream calls said.
        usage: Usage | None = None
        usage_missing = True
        if obs is not None and obs.usage is not None and not obs.usage_missing:
            usage, usage_missing = obs.usage, False
        elif scope.upstream_finished:
            usage = Usage(scope.input_tokens, scope.output_tokens, scope.cached_input_tokens)
            usage_missing = scope.usage_missing
        elif obs is not None:
            usage = obs.usage
        if status is not None and status >= 400:
            usage_missing = False

        model = (obs.model if obs is not None else None) or fields.model or scope.model
        routing = self._routing()
        provider = resolve_provider(model or "unknown")
        if provider == "unknown" and routing.backend:
            provider = routing.backend
        duration_ms = (end - self.start_ns) / 1e6

        recorded = mw.record == "always" or (mw.record == "auto" and not scope.upstream_calls)
        event_id = new_event_id(mw.store.now_ms())
        if recorded:
            event = build_event(
                mw.store,
                model=model,
                provider=provider,
                usage=usage,
                usage_missing=usage_missing,
                agent_id=self.label,
                provider_id=self.key_id,
                duration_ms=duration_ms,
                observed=obs,
                endpoint=self.path,
                error_code=error_code,
                error_message=error_message,
                status_code=status if status is not None and status >= 400 else None,
                event_id=event_id,
                correlation_id=scope.correlation_id,
                parent_event_id=scope.parent_event_id,
            )
            mw.counters.emit(mw.store, event)

        ttfb = self.first_byte_ns
        return RequestRecord(
            event_id=event_id,
            timestamp_ms=self.timestamp_ms,
            request=RequestMetadata(
                endpoint=self.path,
                method=self.method,
                model=clean_id(fields.model),
                stream=bool(fields.stream),
                size_bytes=self.body.size,
                message_count=fields.message_count,
                input_tokens=None if usage is None else usage.input_tokens,
                user_agent=self.user_agent,
                client_ip=self.client_ip,
            ),
            response=None
            if status is None
            else ResponseMetadata(
                status_code=status,
                size_bytes=self.response_size,
                output_tokens=None if usage is None else usage.output_tokens,
                cached_input_tokens=None if usage is None else usage.cached_input_tokens,
                success=error_code is None,
                error_code=error_code,
                error_message=error_message,
            ),
            performance=PerformanceMetrics(
                duration_ms=duration_ms,
                ttfb_ms=None if ttfb is None else (ttfb - self.start_ns) / 1e6,
                ttft_ms=None if obs is None else obs.ttft_ms,
                upstream_duration_ms=scope.upstream_duration_ms if scope.upstream_calls else None,
            ),
            auth=AuthMetadata(
                authenticated=self.auth_method is not None and status not in (401, 403),
                api_key_id=self.key_id,
                api_key_label=self.label,
                auth_method=self.auth_method,
            ),
            routing=routing,
            upstream_calls=scope.upstream_calls,
            recorded=recorded,
        )

    def _routing(self) -> RoutingMetadata:
        hook = self.mw.routing_hook
        if hook is not None:
            try:
                found = hook(self.asgi_scope)
            except Exception as exc:
                self.mw.counters.error("calling routing_hook", exc)
                found = None
        else:
            found = None
        headers = self.routing_from_headers
        backend = (
            (found.backend if found is not None else None)
            or clean_id(headers.get("backend"))
            or self.scope.backend
        )
        mode = (
            (found.upstream_mode if found is not None else None)
            or clean_id(headers.get("mode"))
            or self.scope.upstream_mode
        )
        return RoutingMetadata(backend=backend, upstream_mode=mode)
