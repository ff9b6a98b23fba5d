"""What the OpenAI and Anthropic wire formats say about a call: kind, model, usage, error.

Pure and synchronous. The decoders are typed msgspec Structs naming only the fields we
read, so a body's prompt or completion text is skipped by the parser, never materialised.

Token conventions (llmtally's, see DESIGN): ``input_tokens`` is the total input, cache
reads (``cached_input_tokens``) and writes (``cache_write_input_tokens``) included.

- OpenAI Chat Completions / Completions / Embeddings: ``usage.prompt_tokens`` (total),
  ``completion_tokens``, ``prompt_tokens_details.cached_tokens`` / ``cache_write_tokens``.
- OpenAI Responses: ``usage.input_tokens`` (total), ``output_tokens``,
  ``input_tokens_details.cached_tokens`` / ``cache_write_tokens``.
- Anthropic Messages: ``usage.input_tokens`` counts the *uncached* input only, so the
  total is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

__all__ = [
    "ApiKind",
    "Payload",
    "Usage",
    "WireError",
    "WireUsage",
    "classify_path",
    "decode_ok_body",
    "decode_payload",
    "error_of",
    "merge_usage",
    "normalize_usage",
    "usage_decoder",
]


class ApiKind(enum.Enum):
    """The LLM APIs the integrations understand; the value is routiium's ``upstream_mode``."""

    CHAT = "chat"
    RESPONSES = "responses"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    MESSAGES = "messages"


def classify_path(path: str) -> ApiKind | None:
    """The API a request path calls, from its ending, so that prefixes (``/v1``, Azure's
    ``/openai/deployments/x``, a gateway's ``/openai``) do not matter; ``None`` for
    anything else (``/v1/models``, ``/v1/messages/count_tokens``, Assistants'
    ``/threads/{id}/messages``, ...)."""
    p = path.rstrip("/")
    if p.endswith("/chat/completions"):
        return ApiKind.CHAT
    if p.endswith("/completions"):
        return ApiKind.COMPLETIONS
    if p.endswith("/responses"):
        return ApiKind.RESPONSES
    if p.endswith("/embeddings"):
        return ApiKind.EMBEDDINGS
    if p.endswith("/messages") and "/threads/" not in p and "/completions/" not in p:
        return ApiKind.MESSAGES
    return None


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token counts of one call in llmtally's convention (``input_tokens`` is the total)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0


# --- wire shapes (only the fields we read) ----------------------------------------------


class _Details(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    thinking_tokens: int | None = None


class WireUsage(msgspec.Struct, gc=False):
    """A ``usage`` object of any of the formats (unknown fields are skipped)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    input_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None


class WireError(msgspec.Struct, gc=False):
    """An ``error`` object: OpenAI ``{type, code, message}``, Anthropic ``{type, message}``."""

    type: str | None = None
    code: str | int | None = None
    message: str | None = None


class _Inner(msgspec.Struct, gc=False):
    # A Responses ``response`` object inside an event, or Anthropic's ``message_start.message``.
    model: str | None = None
    usage: WireUsage | None = None
    error: WireError | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: msgspec.Raw = msgspec.Raw()
    function_call: msgspec.Raw = msgspec.Raw()
    audio: msgspec.Raw = msgspec.Raw()


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    text: str | None = None


def _present(raw: msgspec.Raw) -> bool:
    return len(raw) > 0 and bytes(raw) != b"null"


class Payload(msgspec.Struct, gc=False):
    """A JSON body or one SSE event's data, in any of the formats.

    ``message`` is kept raw: an object in Anthropic's ``message_start``, a string in
    error shapes (Responses' ``error`` event, vLLM-style error bodies).
    """

    type: str | None = None
    model: str | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None
    code: str | int | None = None
    message: msgspec.Raw = msgspec.Raw()
    response: _Inner | None = None
    choices: list[_Choice] | None = None

    def has_content(self, kind: ApiKind) -> bool:
        """Whether this stream event carries output (a content, tool or reasoning delta)."""
        if kind is ApiKind.MESSAGES:
            return self.type == "content_block_delta"
        if kind is ApiKind.RESPONSES:
            return self.type is not None and self.type.endswith(".delta")
        for choice in self.choices or ():
            if choice.text:
                return True
            d = choice.delta
            if d is not None and (
                d.content
                or d.refusal
                or d.reasoning_content
                or d.reasoning
                or _present(d.tool_calls)
                or _present(d.function_call)
                or _present(d.audio)
            ):
                return True
        return False

    def inner(self) -> _Inner | None:
        """Anthropic's ``message_start.message`` (model and first usage), if this is one."""
        if self.type == "message_start" and _present(self.message):
            try:
                return _inner_decoder.decode(self.message)
            except msgspec.DecodeError:
                return None
        return None

    def message_text(self) -> str | None:
        """``message`` when it is a string (error shapes)."""
        raw = bytes(self.message)
        if raw[:1] == b'"':
            try:
                return _str_decoder.decode(raw)
            except msgspec.DecodeError:
                return None
        return None


class _OkBody(msgspec.Struct, gc=False):
    # A successful JSON answer: only what the hot path needs (no choices, no output).
    model: str | None = None
    usage: WireUsage | None = None
    error: msgspec.Raw = msgspec.Raw()


_payload_decoder: Final = msgspec.json.Decoder(Payload, strict=False)
_ok_body_decoder: Final = msgspec.json.Decoder(_OkBody, strict=False)
_inner_decoder: Final = msgspec.json.Decoder(_Inner, strict=False)
usage_decoder: Final = msgspec.json.Decoder(WireUsage, strict=False)
_str_decoder: Final = msgspec.json.Decoder(str)


def decode_payload(data: bytes) -> Payload | None:
    """A body or event data as a ``Payload``; ``None`` if it is not a JSON object we can
    read (``[DONE]``, a proxy's HTML error page, a type we did not expect)."""
    try:
        return _payload_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def decode_ok_body(data: bytes) -> tuple[str | None, WireUsage | None, bool] | None:
    """``(model, usage, has_error)`` of a JSON answer with a success status (cheaper than
    ``decode_payload``); ``None`` if it is not a JSON object we can read."""
    try:
        b = _ok_body_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return b.model, b.usage, _present(b.error)


def error_of(p: Payload) -> tuple[str | None, str | None]:
    """``(error_code, error_message)`` of an error body or event, ``(None, None)`` if none.

    The code is OpenAI's ``error.code`` when it is a string (``rate_limit_exceeded``,
    ``invalid_api_key``), else ``error.type`` (OpenAI ``server_error``, Anthropic
    ``rate_limit_error``, ``overloaded_error``); Responses' ``error`` event and
    ``response.failed`` carry it at the top level and in ``response.error``.
    """
    e = p.error
    if e is None and p.response is not None and p.type == "response.failed":
        e = p.response.error or WireError(type="response_failed")
    if isinstance(e, WireError):
        code = e.code if isinstance(e.code, str) and e.code else e.type
        return code or "error", e.message
    if isinstance(e, str):
        return None, e
    if p.type == "error":  # Responses' stream error event: {"type":"error","code","message"}
        code = p.code if isinstance(p.code, str) and p.code else "error"
        return code, p.message_text()
    return None, None


def _n(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


def normalize_usage(u: WireUsage, kind: ApiKind) -> Usage:
    """Wire usage → llmtally's convention (see the module docstring). Negative or missing
    counts are 0; cache parts are capped at the total."""
    prompt = u.prompt_tokens
    if kind is ApiKind.MESSAGES or (
        prompt is None
        and (u.cache_read_input_tokens is not None or u.cache_creation_input_tokens is not None)
    ):
        cached = _n(u.cache_read_input_tokens)
        written = _n(u.cache_creation_input_tokens)
        total = _n(u.input_tokens) + cached + written
        out_details = u.output_tokens_details
        reasoning = 0 if out_details is None else _n(out_details.thinking_tokens)
        return Usage(total, _n(u.output_tokens), cached, written, reasoning)
    # One call per LLM response: the checks of _n are inlined.
    given = prompt if prompt is not None else u.input_tokens
    total = given if given is not None and given > 0 else 0
    given = u.completion_tokens if u.completion_tokens is not None else u.output_tokens
    output = given if given is not None and given > 0 else 0
    details = u.prompt_tokens_details or u.input_tokens_details
    cached = written = 0
    if details is not None:
        cached = min(_n(details.cached_tokens), total)
        written = min(_n(details.cache_write_tokens), total - cached)
    out_details = u.completion_tokens_details or u.output_tokens_details
    reasoning = 0 if out_details is None else _n(out_details.reasoning_tokens)
    return Usage(total, output, cached, written, reasoning)


def merge_usage(earlier: WireUsage | None, later: WireUsage) -> WireUsage:
    """``later`` with the fields it leaves out taken from ``earlier`` (Anthropic reports
    input in ``message_start`` and cumulative counts in ``message_delta``)."""
    if earlier is None:
        return later
    updates = {f: v for f in later.__struct_fields__ if (v := getattr(later, f)) is not None}
    return msgspec.structs.replace(earlier, **updates)
