"""The pure mapping of request events to GenAI measurements, attributes and spans."""

from __future__ import annotations

import pytest

from llmtally import (
    AnalyticsEvent,
    LlmRequestCompleted,
    LlmRequestFailed,
    Provider,
    RouterStarted,
)
from llmtally.exporters.genai import (
    DURATION_BUCKETS,
    PROVIDER_NAMES,
    TOKEN_USAGE_BUCKETS,
    GenAiMapper,
    operation_name,
    provider_name,
)

T0 = 1_760_000_000_000
EVENT_ID = "01890a5d-ac96-774b-bcce-b302099a8057"


def event(payload: object, agent_id: str | None = None) -> AnalyticsEvent:
    return AnalyticsEvent(
        event_id=EVENT_ID,
        timestamp_ms=T0,
        payload=payload,  # type: ignore[arg-type]
        agent_id=agent_id,
    )


def completed(**fields: object) -> AnalyticsEvent:
    base: dict[str, object] = {"model": "gpt-4o-mini", "provider": "openai"}
    return event(LlmRequestCompleted(**{**base, **fields}))  # type: ignore[arg-type]


def failed(**fields: object) -> AnalyticsEvent:
    base: dict[str, object] = {"model": "gpt-4o-mini", "provider": "openai"}
    return event(LlmRequestFailed(**{**base, **fields}))  # type: ignore[arg-type]


def test_bucket_boundaries_are_the_conventions() -> None:
    # As gen-ai-metrics.md gives them: powers of 4 from 1 to 4**13 tokens; 10 ms doubling
    # 13 times for both durations.
    spec_tokens = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                   16777216, 67108864]  # fmt: skip
    spec_seconds = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92]  # fmt: skip
    assert list(TOKEN_USAGE_BUCKETS) == spec_tokens == [4**i for i in range(14)]
    assert list(DURATION_BUCKETS) == spec_seconds


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        pytest.param(Provider.OPENAI, "openai", id="openai"),
        pytest.param(Provider.ANTHROPIC, "anthropic", id="anthropic"),
        pytest.param(Provider.GOOGLE, "gcp.gen_ai", id="google-endpoint-unknown"),
        pytest.param(Provider.MISTRAL, "mistral_ai", id="mistral"),
        pytest.param(Provider.COHERE, "cohere", id="cohere"),
        pytest.param(Provider.DEEPSEEK, "deepseek", id="deepseek"),
        pytest.param(Provider.XAI, "x_ai", id="xai"),
        pytest.param(Provider.GROQ, "groq", id="groq"),
        pytest.param(Provider.AWS, "aws.bedrock", id="aws"),
        pytest.param(Provider.AZURE, "azure.ai.openai", id="azure"),
        pytest.param("bedrock", "aws.bedrock", id="bedrock-alias"),
        pytest.param("vertex_ai", "gcp.vertex_ai", id="vertex"),
        pytest.param("Gemini", "gcp.gemini", id="case-insensitive"),
        pytest.param(Provider.META, "meta", id="custom-value-passes"),
        pytest.param(Provider.UNKNOWN, "unknown", id="unknown-passes"),
        pytest.param("gcp.vertex_ai", "gcp.vertex_ai", id="spec-value-passes"),
    ],
)
def test_provider_names(provider: str, expected: str) -> None:
    assert provider_name(provider) == expected


def test_every_known_provider_maps_to_a_well_known_value() -> None:
    well_known = {
        "anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai", "cohere",
        "deepseek", "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai", "groq", "ibm.watsonx.ai",
        "mistral_ai", "moonshot_ai", "openai", "perplexity", "x_ai",
    }  # fmt: skip
    assert set(PROVIDER_NAMES.values()) <= well_known
    custom = {p for p in Provider if provider_name(p) not in well_known}
    assert custom == {Provider.META, Provider.UNKNOWN}  # no convention value exists


def test_provider_overrides_come_first() -> None:
    assert provider_name("google", {"google": "gcp.vertex_ai"}) == "gcp.vertex_ai"
    mapper = GenAiMapper(provider_names={"my-gateway": "openai"})
    m = mapper.measurements(completed(provider="my-gateway"))
    assert m is not None and m.attributes["gen_ai.provider.name"] == "openai"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        pytest.param("/v1/chat/completions", "chat", id="openai-chat"),
        pytest.param("/v1/completions", "text_completion", id="openai-legacy"),
        pytest.param("/v1/messages", "chat", id="anthropic"),
        pytest.param("/v1/responses", "chat", id="openai-responses"),
        pytest.param("/v1/embeddings/", "embeddings", id="trailing-slash"),
        pytest.param(
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            "generate_content",
            id="gemini-query",
        ),
        pytest.param("/healthz", "chat", id="unknown-default"),
        pytest.param(None, "chat", id="none-default"),
    ],
)
def test_operation_names(endpoint: str | None, expected: str) -> None:
    assert operation_name(endpoint) == expected


def test_without_a_default_operation_the_attribute_is_omitted() -> None:
    assert operation_name("/healthz", None) is None
    m = GenAiMapper(default_operation=None).measurements(completed())
    assert m is not None
    assert m.attributes == {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
    m = GenAiMapper(default_operation=None).measurements(completed(endpoint="/v1/embeddings"))
    assert m is not None and m.attributes["gen_ai.operation.name"] == "embeddings"


def test_a_completed_call() -> None:
    m = GenAiMapper().measurements(
        completed(input_tokens=1_000, output_tokens=50, duration_ms=812.0, cost_nanos=180_000)
    )
    assert m is not None
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    assert m.attributes == base
    assert m.input_attributes == {**base, "gen_ai.token.type": "input"}
    assert m.output_attributes == {**base, "gen_ai.token.type": "output"}
    assert m.duration_attributes == base
    assert (m.input_tokens, m.output_tokens) == (1_000, 50)
    assert m.duration_s == pytest.approx(0.812)
    assert m.ttft_s is None  # not streamed
    assert m.cost_nanos == 180_000


@pytest.mark.parametrize(
    ("event_", "tokens"),
    [
        pytest.param(completed(), (0, 0), id="completed-reported-zeros"),
        pytest.param(completed(usage_missing=True), (None, None), id="no-usage-nothing-counted"),
        pytest.param(
            completed(usage_missing=True, output_tokens=7), (None, 7), id="no-usage-chunks-counted"
        ),
        pytest.param(failed(error_code="timeout"), (None, None), id="failed-without-usage"),
        pytest.param(
            failed(error_code="timeout", input_tokens=12, output_tokens=3),
            (12, 3),
            id="failed-after-consuming",
        ),
    ],
)
def test_token_counts_are_recorded_when_known(
    event_: AnalyticsEvent, tokens: tuple[int | None, int | None]
) -> None:
    m = GenAiMapper().measurements(event_)
    assert m is not None
    assert (m.input_tokens, m.output_tokens) == tokens


def test_a_failed_call_carries_its_error_type_on_the_duration_only() -> None:
    m = GenAiMapper().measurements(failed(error_code="rate_limited", duration_ms=50.0))
    assert m is not None
    assert m.duration_attributes["error.type"] == "rate_limited"
    assert "error.type" not in m.attributes
    assert "error.type" not in m.input_attributes


def test_an_unpriced_call_records_no_cost() -> None:
    m = GenAiMapper().measurements(completed(model="my-model", pricing_status="unpriced"))
    assert m is not None and m.cost_nanos is None


def test_lifecycle_events_have_no_measurements() -> None:
    assert GenAiMapper().measurements(event(RouterStarted(port=1))) is None


def test_attribute_mappings_are_shared_and_the_cache_is_bounded() -> None:
    mapper = GenAiMapper(max_cached=2)
    a = mapper.measurements(completed())
    b = mapper.measurements(completed(input_tokens=5))
    assert a is not None and b is not None and a.attributes is b.attributes
    for model in ("m1", "m2", "m3"):
        mapper.measurements(completed(model=model))
    assert len(mapper._cache) <= 2
    with pytest.raises(ValueError, match="max_cached"):
        GenAiMapper(max_cached=0)


def test_a_span_ends_at_the_event_and_lasts_the_call() -> None:
    mapper = GenAiMapper()
    ev = failed(
        error_code="APIStatusError",
        error_message="503 overloaded",
        status_code=503,
        duration_ms=1_500.25,
        ttft_ms=200.0,
        output_tokens=3,
        cache_write_input_tokens=0,
        provider_id="key-1",
    )
    m = mapper.measurements(ev)
    assert m is not None
    s = mapper.span(ev, m)
    assert s.name == "chat gpt-4o-mini"
    assert s.end_ns == T0 * 1_000_000
    assert s.end_ns - s.start_ns == 1_500_250_000
    assert (s.error_type, s.error_message) == ("APIStatusError", "503 overloaded")
    assert s.attributes["error.type"] == "APIStatusError"
    assert s.attributes["http.response.status_code"] == 503
    assert s.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.2)
    assert s.attributes["gen_ai.usage.output_tokens"] == 3
    assert "gen_ai.usage.input_tokens" not in s.attributes
    assert "gen_ai.usage.cache_creation.input_tokens" not in s.attributes  # zero
    assert s.attributes["llmtally.cost.usd"] == 0.0  # priced at zero tokens


def test_a_span_without_duration_or_operation() -> None:
    mapper = GenAiMapper(default_operation=None)
    ev = completed(cache_write_input_tokens=40, input_tokens=100)
    m = mapper.measurements(ev)
    assert m is not None
    s = mapper.span(ev, m)
    assert s.name == "gpt-4o-mini"
    assert s.start_ns == s.end_ns
    assert s.error_type is None
    assert s.attributes["gen_ai.usage.cache_creation.input_tokens"] == 40
    assert s.attributes["gen_ai.response.model"] == "gpt-4o-mini"
