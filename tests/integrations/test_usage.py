"""Wire formats → llmtally's view: paths, usage conventions, errors, large bodies, watching."""

from __future__ import annotations

import gzip
import itertools
import zlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally.integrations._bodies import BodyCopy, parse_request, request_model, scan_large_body
from llmtally.integrations._decode import MAX_PIECE, body_decoder
from llmtally.integrations._usage import (
    ApiKind,
    Usage,
    WireUsage,
    classify_path,
    decode_payload,
    error_of,
    normalize_usage,
)
from llmtally.integrations._watch import ResponseWatcher


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/v1/chat/completions", ApiKind.CHAT),
        ("/openai/deployments/gpt4/chat/completions", ApiKind.CHAT),
        ("/v1/completions", ApiKind.COMPLETIONS),
        ("/v1/responses", ApiKind.RESPONSES),
        ("/v1/responses/", ApiKind.RESPONSES),
        ("/v1/embeddings", ApiKind.EMBEDDINGS),
        ("/v1/messages", ApiKind.MESSAGES),
        ("/anthropic/v1/messages", ApiKind.MESSAGES),
        ("/v1/messages/count_tokens", None),
        ("/v1/threads/t_1/messages", None),
        ("/v1/chat/completions/c_1/messages", None),
        ("/v1/responses/resp_1/cancel", None),
        ("/v1/models", None),
    ],
)
def test_classify_path(path: str, kind: ApiKind | None) -> None:
    assert classify_path(path) is kind


def usage(**fields: object) -> WireUsage:
    return msgspec.convert(fields, WireUsage)


@pytest.mark.parametrize(
    ("wire", "kind", "expected"),
    [
        pytest.param(
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 10},
                "completion_tokens_details": {"reasoning_tokens": 5},
            },
            ApiKind.CHAT,
            Usage(100, 20, 30, 10, 5),
            id="openai-chat",
        ),
        pytest.param(
            {
                "input_tokens": 100,
                "output_tokens": 20,
                "input_tokens_details": {"cached_tokens": 30},
                "output_tokens_details": {"reasoning_tokens": 7},
            },
            ApiKind.RESPONSES,
            Usage(100, 20, 30, 0, 7),
            id="openai-responses",
        ),
        pytest.param(
            {"prompt_tokens": 8, "total_tokens": 8}, ApiKind.EMBEDDINGS, Usage(8), id="embeddings"
        ),
        pytest.param(
            {
                "input_tokens": 7,
                "cache_read_input_tokens": 200,
                "cache_creation_input_tokens": 100,
                "output_tokens": 4,
                "output_tokens_details": {"thinking_tokens": 1},
            },
            ApiKind.MESSAGES,
            Usage(307, 4, 200, 100, 1),
            id="anthropic-sums-its-split-input",
        ),
        pytest.param(
            {"input_tokens": 5, "output_tokens": 2},
            ApiKind.MESSAGES,
            Usage(5, 2),
            id="anthropic-no-cache",
        ),
        pytest.param(
            {
                "prompt_tokens": -3,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 9},
            },
            ApiKind.CHAT,
            Usage(0, 2, 0, 0),
            id="nonsense-is-clamped",
        ),
        pytest.param(
            {
                "prompt_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 8},
            },
            ApiKind.CHAT,
            Usage(10, 0, 8, 2),
            id="parts-capped-at-the-total",
        ),
    ],
)
def test_normalize_usage(wire: dict[str, object], kind: ApiKind, expected: Usage) -> None:
    assert normalize_usage(usage(**wire), kind) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"error":{"message":"m","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
            ("rate_limit_exceeded", "m"),
            id="openai-code-first",
        ),
        pytest.param(
            b'{"error":{"message":"m","type":"server_error","code":null}}',
            ("server_error", "m"),
            id="openai-type-without-code",
        ),
        pytest.param(
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            ("overloaded_error", "Overloaded"),
            id="anthropic",
        ),
        pytest.param(
            b'{"object":"error","message":"bad","type":"BadRequestError","code":400,"error":null}',
            (None, None),
            id="no-error-object",
        ),
        pytest.param(b'{"error":"model not found"}', (None, "model not found"), id="string"),
        pytest.param(
            b'{"type":"error","code":"server_error","message":"crashed","param":null}',
            ("server_error", "crashed"),
            id="responses-error-event",
        ),
        pytest.param(
            b'{"type":"response.failed","response":{"error":{"code":"server_error","message":"x"}}}',
            ("server_error", "x"),
            id="responses-failed",
        ),
    ],
)
def test_error_of(body: bytes, expected: tuple[str | None, str | None]) -> None:
    p = decode_payload(body)
    assert p is not None
    assert error_of(p) == expected


def test_parse_request() -> None:
    body = b'{"messages":[{"role":"user","content":"x"},{"role":"user","content":"y"}],"model":"m","stream":true}'
    fields = parse_request(body)
    assert fields is not None
    assert (fields.model, fields.stream, fields.message_count) == ("m", True, 2)
    assert request_model(body) == "m"
    responses = parse_request(b'{"model":"m","input":"hello"}')
    assert responses is not None and responses.message_count == 1
    assert parse_request(b"[1, 2]") is None
    assert parse_request(b'{"model": 5}') is None
    assert request_model(b'{"model": 5}') is None
    assert request_model(b'{"messages": []}') is None


def test_body_copy_keeps_both_ends_of_a_large_body() -> None:
    copy = BodyCopy(max_bytes=100, edge_bytes=10)
    for i in range(50):
        copy.feed(bytes([65 + i % 26]) * 7)
    assert copy.truncated and copy.size == 350
    assert copy.head == b"AAAAAAABBB"
    assert len(copy.tail) == 10
    assert copy._buf is not None and len(copy._buf) <= 20


def test_scan_large_body() -> None:
    embedding = (
        b'{"object":"list","data":['
        + b"0.1," * 100_000
        + b'0.1],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}'
    )
    model, wire, stream = scan_large_body(embedding[:16_384], embedding[-16_384:])
    assert model == "text-embedding-3-small"
    assert wire is not None and normalize_usage(wire, ApiKind.EMBEDDINGS) == Usage(8)
    assert stream is None
    request = b'{"messages":[{"content":"\\"model\\": \\"fake\\""}],"model":"gpt-4o","stream":true}'
    assert scan_large_body(request, b"")[0::2] == ("gpt-4o", True)
    nested = b'... "usage": {"input_tokens": 3, "input_tokens_details": {"cache_write_tokens_details": {"a": 1}, "cached_tokens": 2}}}'
    _, wire, _ = scan_large_body(b"", nested)
    assert wire is not None and normalize_usage(wire, ApiKind.RESPONSES) == Usage(3, 0, 2)


def test_decoders() -> None:
    data = b'{"usage": 1}' * 1000
    for coding, encoded in [
        ("gzip", gzip.compress(data)),
        ("deflate", zlib.compress(data)),
        ("deflate", zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
        ("identity", data),
        (None, data),
    ]:
        decode = body_decoder(coding)
        assert decode is not None
        assert (
            b"".join(b"".join(decode(encoded[i : i + 100])) for i in range(0, len(encoded), 100))
            == data
        )
    assert body_decoder("compress") is None
    assert body_decoder("gzip, br") is None


def test_a_decompression_bomb_comes_out_in_bounded_pieces() -> None:
    bomb = gzip.compress(b"\0" * (20 * MAX_PIECE))
    decode = body_decoder("gzip")
    assert decode is not None
    sizes = [len(piece) for piece in decode(bomb)]
    assert max(sizes) <= MAX_PIECE and sum(sizes) == 20 * MAX_PIECE


def _watch(kind: ApiKind, pieces: list[bytes], *, gap_ns: int = 1_000_000) -> ResponseWatcher:
    w = ResponseWatcher(
        kind, status=200, content_type="text/event-stream", content_encoding=None, start_ns=0
    )
    for i, piece in enumerate(pieces):
        w.feed(piece, (i + 1) * gap_ns)
    return w


ANTHROPIC = (
    b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":7,"cache_read_input_tokens":2,"cache_creation_input_tokens":1,"output_tokens":1}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@given(st.lists(st.integers(min_value=0, max_value=len(ANTHROPIC)), max_size=10))
def test_any_split_of_a_stream_gives_the_same_usage(cuts: list[int]) -> None:
    bounds = sorted({0, len(ANTHROPIC), *cuts})
    pieces = [ANTHROPIC[a:b] for a, b in itertools.pairwise(bounds)]
    obs = _watch(ApiKind.MESSAGES, pieces).finish(10**12)
    assert obs.usage == Usage(10, 12, 2, 1)
    assert (obs.model, obs.content_chunks, obs.usage_missing) == ("claude-haiku-4-5", 3, False)


def test_stream_timing_and_per_token_scaling() -> None:
    # one event per piece, pieces 1 ms apart: deltas arrive at 2, 3 and 4 ms
    events = [part + b"\n\n" for part in ANTHROPIC.split(b"\n\n") if part]
    w = _watch(ApiKind.MESSAGES, events)
    assert w.terminal
    obs = w.finish(10_000_000)
    assert obs.ttft_ms == 2.0
    # 12 output tokens over 3 deltas: 4 per delta; 1 ms between deltas → 0.25 ms per token
    assert obs.itl_mean_ms == pytest.approx(0.25)
    assert obs.tokens_per_s == pytest.approx(4000.0)


def test_openai_reasoning_tokens_are_not_spread_over_deltas() -> None:
    chunk = b'data: {"model":"o3","choices":[{"delta":{"content":"x"}}]}\n\n'
    final = b'data: {"model":"o3","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":102,"completion_tokens_details":{"reasoning_tokens":100}}}\n\n'
    obs = _watch(ApiKind.CHAT, [chunk, chunk, final]).finish(10_000_000)
    assert obs.usage == Usage(1, 102, 0, 0, 100)
    assert obs.itl_mean_ms == pytest.approx(1.0)  # 2 visible tokens in 2 deltas: no rescale


def test_tool_call_and_refusal_deltas_count_as_content() -> None:
    tool = b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}\n\n'
    role = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":null,"tool_calls":null}}]}\n\n'
    )
    refusal = b'data: {"choices":[{"delta":{"refusal":"no"}}]}\n\n'
    obs = _watch(ApiKind.CHAT, [role, tool, refusal]).finish(10_000_000)
    assert obs.content_chunks == 2 and obs.ttft_ms == 2.0
    assert obs.usage_missing and obs.usage == Usage(0, 2)


def test_json_error_body() -> None:
    w = ResponseWatcher(
        ApiKind.CHAT,
        status=429,
        content_type="application/json",
        content_encoding=None,
        start_ns=0,
    )
    w.feed(b'{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}', 1)
    obs = w.finish(2)
    assert (obs.error_code, obs.error_message, obs.stream) == (
        "rate_limit_exceeded",
        "slow down",
        False,
    )
