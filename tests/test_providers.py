from __future__ import annotations

import pytest

from llmtally import Provider, infer_provider
from llmtally.providers import split_model_ref


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        pytest.param("gpt-4o-mini", Provider.OPENAI, id="gpt"),
        pytest.param("GPT-4O", Provider.OPENAI, id="case-insensitive"),
        pytest.param("o1-preview", Provider.OPENAI, id="o1"),
        pytest.param("o1", Provider.OPENAI, id="o1-bare"),
        pytest.param("o3-mini", Provider.OPENAI, id="o3"),
        pytest.param("o4-mini", Provider.OPENAI, id="o4"),
        pytest.param("chatgpt-4o-latest", Provider.OPENAI, id="chatgpt"),
        pytest.param("ft:gpt-4o-mini:acme::abc", Provider.OPENAI, id="fine-tune"),
        pytest.param("claude-3-5-sonnet", Provider.ANTHROPIC, id="claude"),
        pytest.param("gemini-1.5-pro", Provider.GOOGLE, id="gemini"),
        pytest.param("mistral-large-latest", Provider.MISTRAL, id="mistral"),
        pytest.param("mixtral-8x7b", Provider.MISTRAL, id="mixtral"),
        pytest.param("codestral-latest", Provider.MISTRAL, id="codestral"),
        pytest.param("deepseek-chat", Provider.DEEPSEEK, id="deepseek"),
        pytest.param("grok-2", Provider.XAI, id="grok"),
        pytest.param("anthropic/claude-3-5-sonnet", Provider.ANTHROPIC, id="prefix-anthropic"),
        pytest.param("openai/gpt-4o", Provider.OPENAI, id="prefix-openai"),
        pytest.param("google/gemma-2-9b-it", Provider.GOOGLE, id="prefix-google"),
        pytest.param("mistralai/mistral-7b", Provider.MISTRAL, id="prefix-mistralai"),
        pytest.param("llama-3-70b", Provider.META, id="llama"),
        pytest.param("my-own-model", Provider.UNKNOWN, id="unknown"),
        pytest.param("", Provider.UNKNOWN, id="empty"),
        pytest.param("o", Provider.UNKNOWN, id="just-o"),
        pytest.param("my-gateway/gpt-4o", Provider.OPENAI, id="unknown-prefix-skipped"),
        pytest.param("accounts/fw/models/llama-v3", Provider.META, id="path-like"),
    ],
)
def test_infer_provider(model: str, provider: Provider) -> None:
    assert infer_provider(model) is provider


def test_provider_is_a_string() -> None:
    assert Provider.OPENAI == "openai"
    assert f"{Provider.ANTHROPIC}" == "anthropic"


def test_split_model_ref() -> None:
    assert split_model_ref("anthropic/claude-3-5-sonnet") == ("anthropic", "claude-3-5-sonnet")
    assert split_model_ref("gpt-4o") == (None, "gpt-4o")
    assert split_model_ref("acme/gpt-4o") == (None, "acme/gpt-4o")
