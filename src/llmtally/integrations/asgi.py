"""``LlmTallyMiddleware``: request analytics for an ASGI LLM router, like routiium's.

::

    app = LlmTallyMiddleware(app, store, api_key_secret=os.environ["LLMTALLY_KEY_SECRET"],
                             label_for_key=labels.get, trusted_proxies=["10.0.0.0/8"])

Pure ASGI (no framework needed). For each tracked request (default: ``POST`` to a path
ending in ``/chat/completions``, ``/completions``, ``/responses``, ``/embeddings`` or
``/messages``) it produces a ``RequestRecord`` — routiium's request, response,
performance, auth and routing metadata — hands it to ``on_request``, and records an LLM
event through the store's existing fields: ``model``, ``endpoint``, ``status_code``,
``duration_ms``, ``ttft_ms`` and the streaming detail, tokens and cost, ``provider_id`` =
the hashed API key id, ``agent_id`` = the key's label. Other requests pass untouched.

Recording (``record=``): ``"auto"`` (default) records the request as an LLM event unless
the handler called upstream through ``LlmTallyTransport`` — the transport then recorded
each upstream call, attributed to this request's key, and a second event would count the
call twice; ``"always"``; ``"never"`` (``on_request`` only).

The request body: its first ``max_body_bytes`` are received before the app runs (so the
model is known even when the app answers without reading it, e.g. a 401) and replayed to
the app message by message, unchanged; a larger body's remainder streams through as the
app reads it. Response bodies are watched as they are sent, never held back.

Privacy: prompt and completion text are never stored: a bounded copy of the request body
is decoded only for ``model``, ``stream`` and the number of messages, and responses only
for usage, model and errors. API keys are stored as a keyed HMAC-SHA256 id (``key_`` + 24 hex digits) under
``api_key_secret``; without a secret no key id is kept. The client IP is the peer
address, or the ``X-Forwarded-For`` hop nearest to us that is not a trusted proxy when the
peer is one; ``anonymize_ip`` cuts it to its /24 (IPv4) or /48 (IPv6) network.

Routing: ``backend``/``upstream_mode`` come from ``routing_hook(scope)``, else the response
headers ``x-llmtally-backend``/``x-llmtally-upstream-mode`` (removed before the response
leaves, by default), else the last upstream call made through ``LlmTallyTransport``.

Analytics never fail a request: exceptions inside the recording are counted in
``middleware.counters`` and logged at a bounded rate; the app's own exceptions pass
through unchanged (the request is recorded as failed first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Literal

from .._exceptions import ConfigurationError
from ._context import enter_scope, leave_scope
from ._exchange import ASGIApp, Exchange, Receive, Scope, Send
from ._record import Counters
from ._request_record import (
    AuthMetadata,
    PerformanceMetrics,
    RequestMetadata,
    RequestRecord,
    ResponseMetadata,
    RoutingMetadata,
    anonymize_ip,
    api_key_id,
    networks,
    resolve_client_ip,
)
from ._sse import DEFAULT_MAX_EVENT_BYTES
from ._usage import classify_path
from ._watch import DEFAULT_MAX_BODY_BYTES

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = [
    "AuthMetadata",
    "LlmTallyMiddleware",
    "PerformanceMetrics",
    "RequestMetadata",
    "RequestRecord",
    "ResponseMetadata",
    "RoutingMetadata",
    "anonymize_ip",
    "api_key_id",
    "resolve_client_ip",
]

MIN_SECRET_BYTES: Final = 16


def _default_track(scope: Scope) -> bool:
    return scope.get("method") == "POST" and classify_path(scope.get("path", "")) is not None


# --- the middleware ---------------------------------------------------------------------------


class LlmTallyMiddleware:
    """Records request metadata and LLM events for an ASGI app; see the module docstring.

    Args:
        app: the ASGI application.
        store: an open ``EventStore`` (events are offered with ``record_nowait``).
        trusted_proxies: IPs or CIDR networks whose ``X-Forwarded-For`` is believed.
        anonymize_ip: keep only the /24 (IPv4) or /48 (IPv6) network of client IPs.
        api_key_secret: HMAC key for API key ids (at least 16 bytes); ``None``: no ids.
        api_key_header: header(s) holding the key, first present wins; ``Authorization``
            values drop their ``Bearer`` scheme.
        label_for_key: the key's human-readable label (e.g. a dict's ``get``), or ``None``;
            it receives the key itself, which goes no further.
        record: ``"auto"``, ``"always"`` or ``"never"`` (see the module docstring).
        track: which requests to watch (default: ``POST`` to an LLM endpoint).
        routing_hook: ``scope → RoutingMetadata | None``, asked when the response ends.
        backend_header, upstream_mode_header: response headers the app may set to report
            routing; ``None`` to ignore. ``strip_routing_headers`` removes them.
        on_request: called with each ``RequestRecord`` (synchronously; keep it quick).
        max_body_bytes: bound of the request and JSON-response copies parsed.
        max_event_bytes: bound of one SSE event of a streamed response.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: EventStore,
        *,
        trusted_proxies: Iterable[str] = (),
        anonymize_ip: bool = False,
        api_key_secret: bytes | str | None = None,
        api_key_header: str | Sequence[str] = ("authorization", "x-api-key"),
        label_for_key: Callable[[str], str | None] | None = None,
        record: Literal["auto", "always", "never"] = "auto",
        track: Callable[[Scope], bool] | None = None,
        routing_hook: Callable[[Scope], RoutingMetadata | None] | None = None,
        backend_header: str | None = "x-llmtally-backend",
        upstream_mode_header: str | None = "x-llmtally-upstream-mode",
        strip_routing_headers: bool = True,
        on_request: Callable[[RequestRecord], None] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        if record not in ("auto", "always", "never"):
            raise ConfigurationError(f"record must be 'auto', 'always' or 'never', got {record!r}")
        if isinstance(api_key_secret, str):
            api_key_secret = api_key_secret.encode("utf-8")
        if api_key_secret is not None and len(api_key_secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"api_key_secret must be at least {MIN_SECRET_BYTES} bytes")
        self.app = app
        self.store = store
        self.trusted_proxies = networks(trusted_proxies)
        self.anonymize_ip = anonymize_ip
        self._secret = api_key_secret
        headers = (api_key_header,) if isinstance(api_key_header, str) else tuple(api_key_header)
        self.api_key_headers = tuple(h.lower().encode("latin-1") for h in headers)
        self.label_for_key = label_for_key
        self.record: Literal["auto", "always", "never"] = record
        self.track = track or _default_track
        self.routing_hook = routing_hook
        self._routing_headers = {
            name.lower().encode("latin-1"): field
            for name, field in ((backend_header, "backend"), (upstream_mode_header, "mode"))
            if name
        }
        self.strip_routing_headers = strip_routing_headers
        self.on_request = on_request
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.counters = Counters("ASGI middleware")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            tracked = self.track(scope)
            exchange = Exchange(self, scope, receive, send) if tracked else None
        except Exception as exc:
            self.counters.error("reading the request", exc)
            exchange = None
        if exchange is None:
            await self.app(scope, receive, send)
            return
        token = enter_scope(exchange.scope)
        failure: BaseException | None = None
        try:
            await exchange.read_ahead()
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            leave_scope(token)
            exchange.finish(failure)
