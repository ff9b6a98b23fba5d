"""The request being handled, shared by the ASGI middleware and the httpx2 transport.

A router's request handler runs inside ``LlmTallyMiddleware`` and calls upstream through
``LlmTallyTransport``; both see the same ``RequestScope`` through a ``ContextVar`` (tasks
the handler starts copy the context, so they see it too). The transport takes its
attribution (``agent_id``, ``provider_id``) from the scope and reports each upstream call
back to it; the middleware then knows the request was already recorded upstream and what
it cost. ``attribution()`` opens a scope without the middleware. The scope also carries
the request's ``correlation_id``/``parent_event_id`` (from its headers, see
``_correlation``), which every event recorded within it gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from ._usage import Usage

__all__ = ["RequestScope", "attribution", "current_scope", "enter_scope", "leave_scope"]


class RequestScope:
    """Per-request attribution and what the upstream calls made within it reported.

    Mutable and owned by the event loop's thread; the transport only adds to it.
    """

    __slots__ = (
        "agent_id",
        "backend",
        "cached_input_tokens",
        "correlation_id",
        "input_tokens",
        "model",
        "output_tokens",
        "parent_event_id",
        "provider_id",
        "upstream_calls",
        "upstream_duration_ms",
        "upstream_finished",
        "upstream_mode",
        "usage_missing",
    )

    def __init__(
        self,
        agent_id: str | None = None,
        provider_id: str | None = None,
        correlation_id: str | None = None,
        parent_event_id: str | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.provider_id = provider_id
        self.correlation_id = correlation_id
        self.parent_event_id = parent_event_id
        self.upstream_calls = 0  # LLM calls started through an LlmTallyTransport
        self.upstream_finished = 0
        self.upstream_duration_ms = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.usage_missing = False
        self.model: str | None = None
        self.backend: str | None = None  # provider of the last upstream call
        self.upstream_mode: str | None = None  # API of the last upstream call

    def upstream_done(
        self,
        *,
        provider: str,
        mode: str,
        model: str,
        usage: Usage,
        usage_missing: bool,
        duration_ms: float,
    ) -> None:
        """An upstream call made within this request finished (called by the transport)."""
        self.upstream_finished += 1
        self.upstream_duration_ms += duration_ms
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.usage_missing = self.usage_missing or usage_missing
        self.model = model
        self.backend = provider
        self.upstream_mode = mode


_current: ContextVar[RequestScope | None] = ContextVar("llmtally_request_scope", default=None)


def current_scope() -> RequestScope | None:
    """The scope of the request being handled, if any."""
    return _current.get()


@contextmanager
def attribution(
    *,
    agent_id: str | None = None,
    provider_id: str | None = None,
    correlation_id: str | None = None,
    parent_event_id: str | None = None,
) -> Iterator[RequestScope]:
    """Attribute the LLM calls made through ``LlmTallyTransport`` inside this block to
    ``agent_id``/``provider_id`` (they override the transport's defaults) and correlate
    them with ``correlation_id``/``parent_event_id``::

        with attribution(agent_id="agent-7", correlation_id=request_id):
            await client.chat.completions.create(...)

    Yields the ``RequestScope``, whose counters show what the calls reported. A
    correlation id outside the envelope's limits is not recorded (never an error).
    """
    scope = RequestScope(agent_id, provider_id, correlation_id, parent_event_id)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def enter_scope(scope: RequestScope) -> Token[RequestScope | None]:
    """Make ``scope`` current; returns the token for ``leave_scope``."""
    return _current.set(scope)


def leave_scope(token: Token[RequestScope | None]) -> None:
    """Undo ``enter_scope`` (in the same context)."""
    _current.reset(token)
