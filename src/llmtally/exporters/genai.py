"""llmtally request events as OpenTelemetry GenAI semantic-convention measurements (pure).

The names, units and bucket boundaries are the GenAI semantic conventions' (status
"Development"; the ``semantic-conventions-genai`` repository, ``gen-ai-metrics.md`` and
``gen-ai-spans.md``). They are spelled out here rather than taken from the
``opentelemetry-semantic-conventions`` package: its GenAI constants are deprecated there
(moved to that repository) and it gives no bucket boundaries.

One request event (``LlmRequestCompleted`` or ``LlmRequestFailed``) gives:

=============================================  ============  ===================================
instrument                                     unit          recorded when
=============================================  ============  ===================================
``gen_ai.client.token.usage`` (histogram)      ``{token}``   a count is known, once per
                                                             ``gen_ai.token.type`` (input,
                                                             output)
``gen_ai.client.operation.duration`` (hist.)   ``s``         ``duration_ms`` is set
``gen_ai.client.operation.time_to_first_chunk``  ``s``       ``ttft_ms`` is set (a streamed
(histogram)                                                  call: only streams have a first
                                                             chunk apart from the response)
``llmtally.cost`` (counter, integer)           ``{nanodollar}``  the call is priced
=============================================  ============  ===================================

Every measurement carries ``gen_ai.provider.name``, ``gen_ai.request.model`` and
``gen_ai.operation.name`` (from the endpoint, else ``default_operation``; omitted when
both are unknown); the duration of a failed call also ``error.type`` (the event's
``error_code``: an exception's class name, ``"cancelled"``, or what the integration set).

A token count is *known* when it is positive, or when it is a zero that a completed call's
usage reported (not ``usage_missing``): a failure or a call without usage reports zeros
it never measured, and the conventions say not to report usage that is not available.
Input tokens are the total input, cache reads and writes included (the conventions'
meaning too).

Cost is an integer counter in nano-dollars (1 USD = 1,000,000,000), not a float counter in
dollars: the SDK keeps integer sums exact however many calls are added, where float sums of
many small amounts drift; one cheap call costs a few thousand nano-dollars, which
micro-dollars would round away; and int64 holds 9.2 billion dollars. Divide by 1e9 in the
query. Spans carry the cost of their call as ``llmtally.cost.usd`` (a float, for reading).

The event's timestamp is the end of the call (llmtally records a call when it ends); a
span starts ``duration_ms`` before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ..events import AnalyticsEvent, LlmRequestCompleted, LlmRequestFailed

__all__ = [
    "COST",
    "DURATION_BUCKETS",
    "OPERATION_DURATION",
    "PROVIDER_NAMES",
    "TIME_TO_FIRST_CHUNK",
    "TOKEN_USAGE",
    "TOKEN_USAGE_BUCKETS",
    "GenAiMapper",
    "GenAiMeasurements",
    "GenAiSpan",
    "operation_name",
    "provider_name",
]

TOKEN_USAGE: Final = "gen_ai.client.token.usage"
OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
COST: Final = "llmtally.cost"

TOKEN_USAGE_BUCKETS: Final[tuple[int, ...]] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""The conventions' ``ExplicitBucketBoundaries`` for ``gen_ai.client.token.usage``."""

DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""The conventions' boundaries for ``gen_ai.client.operation.duration`` and
``gen_ai.client.operation.time_to_first_chunk`` (seconds)."""

# Attribute keys (the conventions' registry).
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
TOKEN_TYPE: Final = "gen_ai.token.type"
ERROR_TYPE: Final = "error.type"

PROVIDER_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        # ``google`` is what llmtally infers for gemini-* models; which Google endpoint
        # served the call (AI Studio: gcp.gemini, Vertex: gcp.vertex_ai) is not known.
        "google": "gcp.gen_ai",
        "gemini": "gcp.gemini",
        "vertex_ai": "gcp.vertex_ai",
        "vertex": "gcp.vertex_ai",
        "google-vertex": "gcp.vertex_ai",
        "mistral": "mistral_ai",
        "mistralai": "mistral_ai",
        "cohere": "cohere",
        "deepseek": "deepseek",
        "x-ai": "x_ai",
        "xai": "x_ai",
        "groq": "groq",
        "perplexity": "perplexity",
        "aws": "aws.bedrock",
        "bedrock": "aws.bedrock",
        "azure": "azure.ai.openai",
        "azure_openai": "azure.ai.openai",
        "azure_ai": "azure.ai.inference",
        "watsonx": "ibm.watsonx.ai",
        "moonshot": "moonshot_ai",
    }
)
"""llmtally provider names (``Provider`` values and common aliases) → the conventions'
well-known ``gen_ai.provider.name`` values. Any other name (``meta``, ``unknown``, a
router's own) is passed through as a custom value, as the conventions allow."""

# Endpoint path endings → the conventions' well-known ``gen_ai.operation.name`` values.
# Ordered: the first match wins ("/chat/completions" before "/completions").
_OPERATIONS: Final[tuple[tuple[str, str], ...]] = (
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/messages", "chat"),  # Anthropic
    ("/responses", "chat"),  # OpenAI Responses API
    ("/chat", "chat"),  # Cohere, Ollama
    ("/converse", "chat"),  # Bedrock
    ("/converse-stream", "chat"),
    ("/embeddings", "embeddings"),
    ("/embed", "embeddings"),
    ("/generate", "text_completion"),  # Ollama
    (":generatecontent", "generate_content"),  # Gemini
    (":streamgeneratecontent", "generate_content"),
)


def provider_name(provider: str, overrides: Mapping[str, str] | None = None) -> str:
    """The ``gen_ai.provider.name`` for an llmtally provider name (``overrides`` first)."""
    if overrides is not None and provider in overrides:
        return overrides[provider]
    return PROVIDER_NAMES.get(provider.lower(), provider)


def operation_name(endpoint: str | None, default: str | None = "chat") -> str | None:
    """The ``gen_ai.operation.name`` of a call to ``endpoint`` (a URL path), else ``default``."""
    if endpoint:
        path = endpoint.partition("?")[0].rstrip("/").lower()
        for suffix, name in _OPERATIONS:
            if path.endswith(suffix):
                return name
    return default


class GenAiMeasurements:
    """What one request event records. Attribute mappings are shared between events of
    the same model, provider and operation: treat them as read-only."""

    __slots__ = (
        "attributes",
        "cost_nanos",
        "duration_attributes",
        "duration_s",
        "input_attributes",
        "input_tokens",
        "output_attributes",
        "output_tokens",
        "ttft_s",
    )

    def __init__(
        self,
        *,
        attributes: dict[str, str],
        input_attributes: dict[str, str],
        output_attributes: dict[str, str],
        duration_attributes: dict[str, str],
        input_tokens: int | None,
        output_tokens: int | None,
        duration_s: float | None,
        ttft_s: float | None,
        cost_nanos: int | None,
    ) -> None:
        self.attributes = attributes
        self.input_attributes = input_attributes
        self.output_attributes = output_attributes
        self.duration_attributes = duration_attributes
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.duration_s = duration_s
        self.ttft_s = ttft_s
        self.cost_nanos = cost_nanos


class GenAiSpan:
    """One span per request: ``{operation} {model}``, kind CLIENT, from start to end
    (unix nanoseconds); ``error_type`` set for a failed call (span status ERROR)."""

    __slots__ = ("attributes", "end_ns", "error_message", "error_type", "name", "start_ns")

    def __init__(
        self,
        *,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, str | int | float],
        error_type: str | None,
        error_message: str | None,
    ) -> None:
        self.name = name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.error_type = error_type
        self.error_message = error_message


_MAX_ERRORS_CACHED: Final = 64  # error types whose attribute mapping is kept, per key


class _Attributes:
    """The attribute mappings of one (provider, model, endpoint)."""

    __slots__ = ("base", "errors", "input", "output", "provider")

    def __init__(self, base: dict[str, str], provider: str) -> None:
        self.base = base
        self.provider = provider
        self.input = {**base, TOKEN_TYPE: "input"}
        self.output = {**base, TOKEN_TYPE: "output"}
        self.errors: dict[str, dict[str, str]] = {}

    def with_error(self, error_type: str) -> dict[str, str]:
        attrs = self.errors.get(error_type)
        if attrs is None:
            attrs = {**self.base, ERROR_TYPE: error_type}
            if len(self.errors) < _MAX_ERRORS_CACHED:
                self.errors[error_type] = attrs
        return attrs


class GenAiMapper:
    """Maps events to ``GenAiMeasurements`` and ``GenAiSpan``; keeps a bounded cache of
    attribute mappings (``max_cached`` keys; cleared when full).

    Args:
        default_operation: ``gen_ai.operation.name`` when the event's endpoint does not
            tell (``record_llm_completed`` calls carry none): ``"chat"``, the operation
            of most routed calls; ``None`` to omit the attribute then.
        provider_names: llmtally provider name → ``gen_ai.provider.name``, consulted
            before ``PROVIDER_NAMES``.
    """

    def __init__(
        self,
        *,
        default_operation: str | None = "chat",
        provider_names: Mapping[str, str] | None = None,
        max_cached: int = 1_000,
    ) -> None:
        if max_cached < 1:
            raise ValueError("max_cached must be at least 1")
        self.default_operation = default_operation
        self.provider_names = dict(provider_names or {})
        self._max_cached = max_cached
        self._cache: dict[tuple[str, str, str | None], _Attributes] = {}

    def _attributes(self, provider: str, model: str, endpoint: str | None) -> _Attributes:
        key = (provider, model, endpoint)
        attrs = self._cache.get(key)
        if attrs is None:
            name = provider_name(provider, self.provider_names)
            base = {PROVIDER_NAME: name, REQUEST_MODEL: model}
            operation = operation_name(endpoint, self.default_operation)
            if operation is not None:
                base[OPERATION_NAME] = operation
            attrs = _Attributes(base, name)
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key] = attrs
        return attrs

    def measurements(self, event: AnalyticsEvent) -> GenAiMeasurements | None:
        """What ``event`` records; ``None`` for lifecycle and budget events."""
        p = event.payload
        if type(p) is LlmRequestCompleted:
            error_type = None
        elif type(p) is LlmRequestFailed:
            error_type = p.error_code
        else:
            return None
        attrs = self._attributes(p.provider, p.model, p.endpoint)
        reported = error_type is None and not p.usage_missing
        return GenAiMeasurements(
            attributes=attrs.base,
            input_attributes=attrs.input,
            output_attributes=attrs.output,
            duration_attributes=attrs.base if error_type is None else attrs.with_error(error_type),
            input_tokens=p.input_tokens if p.input_tokens or reported else None,
            output_tokens=p.output_tokens if p.output_tokens or reported else None,
            duration_s=None if p.duration_ms is None else p.duration_ms / 1000.0,
            ttft_s=None if p.ttft_ms is None else p.ttft_ms / 1000.0,
            cost_nanos=p.cost_nanos if p.pricing_status == "priced" else None,
        )

    def span(self, event: AnalyticsEvent, m: GenAiMeasurements) -> GenAiSpan:
        """The span of a request event whose measurements are ``m``."""
        p = event.payload
        assert isinstance(p, LlmRequestCompleted | LlmRequestFailed)
        attributes: dict[str, str | int | float] = dict(m.attributes)
        operation = m.attributes.get(OPERATION_NAME)
        name = p.model if operation is None else f"{operation} {p.model}"
        if m.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = m.input_tokens
        if m.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = m.output_tokens
        if p.cached_input_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = p.cached_input_tokens
        if p.cache_write_input_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = p.cache_write_input_tokens
        if m.ttft_s is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = m.ttft_s
        attributes["llmtally.event_id"] = event.event_id
        attributes["llmtally.pricing_status"] = p.pricing_status
        if m.cost_nanos is not None:
            attributes["llmtally.cost.usd"] = m.cost_nanos / 1e9
        if event.agent_id is not None:
            attributes["llmtally.agent_id"] = event.agent_id
        if p.provider_id is not None:
            attributes["llmtally.provider_id"] = p.provider_id
        if p.endpoint is not None:
            attributes["llmtally.endpoint"] = p.endpoint
        error_type = error_message = None
        if isinstance(p, LlmRequestFailed):
            error_type, error_message = p.error_code, p.error_message
            attributes[ERROR_TYPE] = error_type
            if p.status_code is not None:
                attributes["http.response.status_code"] = p.status_code
        else:
            # The model llmtally records for a completed call is the response's when the
            # integration saw one.
            attributes[RESPONSE_MODEL] = p.model
        end_ns = event.timestamp_ms * 1_000_000
        start_ns = end_ns if p.duration_ms is None else end_ns - round(p.duration_ms * 1e6)
        return GenAiSpan(
            name=name,
            start_ns=max(0, start_ns),
            end_ns=end_ns,
            attributes=attributes,
            error_type=error_type,
            error_message=error_message,
        )
