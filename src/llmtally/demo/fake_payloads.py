"""The bodies the fake upstream answers with: OpenAI and Anthropic JSON and SSE shapes.

Pure functions of (model, usage, scenario). Shapes follow the public API references:
OpenAI ``chat.completion`` / ``chat.completion.chunk`` (``stream_options.include_usage``
adds a final chunk with empty ``choices`` and the usage), Responses (``response.created``
… ``response.completed``), legacy completions, embeddings; Anthropic ``message`` and
``message_start`` / ``content_block_delta`` / ``message_delta`` / ``message_stop`` with
``event:`` lines. Stream generators yield ``(is_content_delta, event_bytes)`` so that the
server can pace the deltas (TTFT, inter-token latency).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec

__all__ = [
    "ANTHROPIC_MODEL",
    "ANTHROPIC_USAGE",
    "CHAT_USAGE",
    "CREATED",
    "EMBEDDING_MODEL",
    "INSTRUCT_MODEL",
    "OPENAI_MODEL",
    "RESPONSES_USAGE",
    "TEXT",
    "TOKENS",
    "StreamEvents",
    "anthropic_error",
    "anthropic_usage",
    "chat_answer",
    "chat_chunks",
    "chat_usage",
    "message_answer",
    "message_events",
    "openai_error",
    "response_events",
    "response_object",
    "sse",
]

OPENAI_MODEL: Final = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL: Final = "claude-haiku-4-5-20251001"
EMBEDDING_MODEL: Final = "text-embedding-3-small"
INSTRUCT_MODEL: Final = "gpt-3.5-turbo-instruct"
TOKENS: Final = ["Hello", " there", ",", " friend"]
TEXT: Final = "".join(TOKENS)
CREATED: Final = 1_700_000_000

CHAT_USAGE: Final[dict[str, Any]] = {
    "prompt_tokens": 11,
    "completion_tokens": 4,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSES_USAGE: Final[dict[str, Any]] = {
    "input_tokens": 20,
    "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 2},
    "output_tokens": 4,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 24,
}
ANTHROPIC_USAGE: Final[dict[str, Any]] = {
    "input_tokens": 7,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 200,
    "output_tokens": 4,
}

_OPENAI_ERRORS: Final[dict[int, dict[str, Any]]] = {
    429: {
        "error": {
            "message": "Rate limit reached for gpt-4o-mini in organization org-fake on "
            "requests per min (RPM): Limit 3, Used 3, Requested 1.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    },
    500: {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    },
}
_ANTHROPIC_ERRORS: Final[dict[int, tuple[str, str]]] = {
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

StreamEvents = Iterator[tuple[bool, bytes]]
"""``(is_content_delta, one SSE event)`` in order."""

_encode: Final = msgspec.json.encode


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line and a JSON ``data:`` line."""
    head = b"" if event is None else b"event: " + event.encode() + b"\n"
    body = data if isinstance(data, bytes) else _encode(data)
    return head + b"data: " + body + b"\n\n"


def openai_error(status: int) -> dict[str, Any] | None:
    """OpenAI's error body for ``status`` (429, 500), else ``None``."""
    return _OPENAI_ERRORS.get(status)


def anthropic_error(status: int) -> dict[str, Any] | None:
    """Anthropic's error body for ``status`` (429, 500, 529), else ``None``."""
    if status not in _ANTHROPIC_ERRORS:
        return None
    kind, message = _ANTHROPIC_ERRORS[status]
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}


def chat_usage(input_tokens: int, output_tokens: int, cached: int) -> dict[str, Any]:
    """An OpenAI chat ``usage`` object (``input_tokens`` includes ``cached``)."""
    return {
        **CHAT_USAGE,
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
    }


def anthropic_usage(input_tokens: int, output_tokens: int, cached: int) -> dict[str, Any]:
    """An Anthropic ``usage`` object: ``input_tokens`` there excludes the cache reads."""
    return {
        "input_tokens": input_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output_tokens,
    }


# --- OpenAI chat --------------------------------------------------------------------------


def chat_answer(model: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """A ``chat.completion`` (without ``usage`` when it is ``None``)."""
    answer: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


def chat_chunks(
    model: str, usage: dict[str, Any], include_usage: bool, scenario: str
) -> StreamEvents:
    """A chat completion stream; ``stream-error`` breaks it with an error chunk."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        c: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return sse(c)

    yield False, chunk({"role": "assistant", "content": "", "refusal": None})
    for i, token in enumerate(TOKENS):
        if scenario == "stream-error" and i == 1:
            error = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
            yield False, sse(error)
            return
        yield True, chunk({"content": token})
    yield False, chunk({}, "stop")
    if include_usage:
        last = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": usage,
        }
        yield False, sse(last)
    yield False, b"data: [DONE]\n\n"


# --- OpenAI Responses -----------------------------------------------------------------------


def response_object(model: str, status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """A Responses API ``response`` object in ``status``."""
    done = status == "completed"
    output = [
        {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
        }
    ]
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def response_events(model: str, scenario: str) -> StreamEvents:
    """A Responses API stream; ``stream-error`` breaks it with an ``error`` event."""
    seq = iter(range(1_000))

    def ev(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

    yield False, ev("response.created", response=response_object(model, "in_progress", None))
    yield False, ev("response.in_progress", response=response_object(model, "in_progress", None))
    item = {"id": "msg_fake", "type": "message", "status": "in_progress", "role": "assistant"}
    yield False, ev("response.output_item.added", output_index=0, item={**item, "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    where: dict[str, Any] = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
    yield False, ev("response.content_part.added", **where, part=part)
    for i, token in enumerate(TOKENS):
        if scenario == "stream-error" and i == 1:
            yield False, ev("error", code="server_error", message="The model crashed", param=None)
            return
        yield True, ev("response.output_text.delta", **where, delta=token, logprobs=[])
    yield False, ev("response.output_text.done", **where, text=TEXT, logprobs=[])
    done = response_object(model, "completed", RESPONSES_USAGE)
    yield False, ev("response.content_part.done", **where, part={**part, "text": TEXT})
    yield False, ev("response.output_item.done", output_index=0, item=done["output"][0])
    yield False, ev("response.completed", response=done)


# --- Anthropic ------------------------------------------------------------------------------


def message_answer(model: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """An Anthropic ``message`` (without ``usage`` when it is ``None``)."""
    answer: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


def message_events(model: str, usage: dict[str, Any], scenario: str) -> StreamEvents:
    """An Anthropic message stream; ``stream-error`` breaks it with an ``error`` event,
    ``no-usage`` leaves out ``message_delta``."""
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield False, sse({"type": "message_start", "message": message}, "message_start")
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield False, sse(block, "content_block_start")
    yield False, sse({"type": "ping"}, "ping")
    for i, text in enumerate(("Hello there", ", friend")):
        if scenario == "stream-error" and i == 1:
            error = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
            yield False, sse(error, "error")
            return
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        yield True, sse(delta, "content_block_delta")
    yield False, sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    if scenario != "no-usage":
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
        yield False, sse(final, "message_delta")
    yield False, sse({"type": "message_stop"}, "message_stop")
