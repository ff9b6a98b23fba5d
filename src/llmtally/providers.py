"""LLM providers and inference of the provider from a model name.

``infer_provider`` is pure and cached: it runs on every recording call.
"""

from __future__ import annotations

import enum
from functools import lru_cache

__all__ = ["Provider", "infer_provider", "split_model_ref"]


class Provider(enum.StrEnum):
    """The providers llmtally knows by name; any other string is accepted where a provider is."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    MISTRAL = "mistral"
    COHERE = "cohere"
    DEEPSEEK = "deepseek"
    XAI = "x-ai"
    META = "meta"
    GROQ = "groq"
    AWS = "aws"
    AZURE = "azure"
    UNKNOWN = "unknown"


# Ordered: the first matching prefix wins.
_PREFIXES: tuple[tuple[str, Provider], ...] = (
    ("gpt-", Provider.OPENAI),
    ("chatgpt-", Provider.OPENAI),
    ("o1", Provider.OPENAI),
    ("o3", Provider.OPENAI),
    ("o4", Provider.OPENAI),
    ("text-embedding-", Provider.OPENAI),
    ("davinci", Provider.OPENAI),
    ("babbage", Provider.OPENAI),
    ("claude-", Provider.ANTHROPIC),
    ("gemini-", Provider.GOOGLE),
    ("gemma-", Provider.GOOGLE),
    ("models/gemini-", Provider.GOOGLE),
    ("mistral-", Provider.MISTRAL),
    ("mixtral-", Provider.MISTRAL),
    ("codestral-", Provider.MISTRAL),
    ("ministral-", Provider.MISTRAL),
    ("pixtral-", Provider.MISTRAL),
    ("magistral-", Provider.MISTRAL),
    ("open-mistral-", Provider.MISTRAL),
    ("open-mixtral-", Provider.MISTRAL),
    ("command", Provider.COHERE),
    ("deepseek-", Provider.DEEPSEEK),
    ("grok-", Provider.XAI),
    ("llama", Provider.META),
    ("meta-llama", Provider.META),
)

# Spellings seen in ``provider/model`` references (LiteLLM, OpenRouter, Vertex...).
_ALIASES: dict[str, Provider] = {
    "openai": Provider.OPENAI,
    "anthropic": Provider.ANTHROPIC,
    "google": Provider.GOOGLE,
    "gemini": Provider.GOOGLE,
    "vertex_ai": Provider.GOOGLE,
    "google-vertex": Provider.GOOGLE,
    "mistral": Provider.MISTRAL,
    "mistralai": Provider.MISTRAL,
    "cohere": Provider.COHERE,
    "deepseek": Provider.DEEPSEEK,
    "x-ai": Provider.XAI,
    "xai": Provider.XAI,
    "meta": Provider.META,
    "meta-llama": Provider.META,
    "groq": Provider.GROQ,
    "bedrock": Provider.AWS,
    "aws": Provider.AWS,
    "azure": Provider.AZURE,
    "azure_openai": Provider.AZURE,
}


def split_model_ref(model: str) -> tuple[str | None, str]:
    """Split ``"provider/model"`` into ``(provider_prefix, model)``; ``(None, model)`` otherwise.

    Only a known provider prefix is split off: ``"meta-llama/Llama-3-70b"`` keeps its
    prefix as a provider, ``"ft:gpt-4o:org/x"`` is left alone.
    """
    prefix, sep, rest = model.partition("/")
    if sep and rest and prefix.lower() in _ALIASES:
        return prefix.lower(), rest
    return None, model


@lru_cache(maxsize=4096)
def infer_provider(model: str) -> Provider:
    """The provider serving ``model``, from its name; ``Provider.UNKNOWN`` when unsure.

    ``gpt-*``, ``o1*``, ``o3*``, ``o4*``, ``chatgpt-*`` → openai; ``claude-*`` → anthropic;
    ``gemini-*`` → google; ``mistral-*``/``mixtral-*``/... → mistral; ``provider/model``
    names use their prefix (``openrouter``-style ``anthropic/claude-3-5-sonnet``); an
    unknown prefix is skipped (``my-gateway/gpt-4o`` → openai).
    Matching is case-insensitive. Never raises.
    """
    prefix, rest = split_model_ref(model)
    if prefix is not None:
        return _ALIASES[prefix]
    name = rest.lower().rpartition("/")[2]  # "accounts/x/models/llama-3" → "llama-3"
    if name.startswith("ft:"):  # OpenAI fine-tunes: ft:gpt-4o-mini:org::id
        name = name[3:]
    for start, provider in _PREFIXES:
        if name.startswith(start):
            return provider
    return Provider.UNKNOWN
