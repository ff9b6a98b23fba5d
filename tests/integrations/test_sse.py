"""The incremental SSE parser: line endings, fields, bounds, and any split of the input."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally.integrations._sse import SseParser


def parse_all(parser: SseParser, pieces: list[bytes]) -> list[bytes]:
    events: list[bytes] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"data: a\n\n", [b"a"], id="lf"),
        pytest.param(b"data: a\r\n\r\n", [b"a"], id="crlf"),
        pytest.param(b"data: a\r\rdata: b\r\r", [b"a", b"b"], id="cr"),
        pytest.param(b"data:a\n\n", [b"a"], id="no-space"),
        pytest.param(b"data:  a\n\n", [b" a"], id="one-space-only"),
        pytest.param(b"data: a\ndata: b\n\n", [b"a\nb"], id="multi-line"),
        pytest.param(b"data\n\n", [b""], id="empty-data"),
        pytest.param(b"event: x\nid: 1\nretry: 5\n: comment\ndata: a\n\n", [b"a"], id="fields"),
        pytest.param(b"event: ping\n\n", [], id="no-data"),
        pytest.param(b"database: x\n\n", [], id="other-field"),
        pytest.param(b"data: a\n\n\n\ndata: b\n\n", [b"a", b"b"], id="blank-lines"),
        pytest.param(b"data: tail-without-blank-line", [b"tail-without-blank-line"], id="eof"),
    ],
)
def test_cases(body: bytes, expected: list[bytes]) -> None:
    assert parse_all(SseParser(), [body]) == expected


def test_a_split_crlf_is_one_line_ending() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []  # the line ended; its "\n" may follow
    assert parser.feed(b"\n\r") == [b"a"]  # that "\n" is skipped; "\r" is a blank line
    assert parser.feed(b"\ndata: b\n\n") == [b"b"]  # "\r\n" again: one line end


def test_an_oversized_event_is_skipped_and_counted() -> None:
    parser = SseParser(max_event_bytes=16)
    big = b"data: " + b"x" * 40 + b"\n\n"
    assert parse_all(parser, [b"data: a\n\n", big[:20], big[20:], b"data: b\n\n"]) == [b"a", b"b"]
    assert parser.overflows == 1
    parser = SseParser(max_event_bytes=16)
    lines = b"data: 0123456789\ndata: 0123456789\n\ndata: ok\n\n"
    assert parse_all(parser, [lines]) == [b"ok"]
    assert parser.overflows == 1


def test_buffer_stays_bounded_on_a_line_without_end() -> None:
    parser = SseParser(max_event_bytes=1024)
    for _ in range(100):
        parser.feed(b"y" * 500)
        assert len(parser._buf) <= 1024
    assert parser.feed(b"\n\ndata: after\n\n") == [b"after"]


TRANSCRIPT = (
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b": ping\r\n\r\n"
    b'data: {"a":"h\xc3\xa9llo"}\r\ndata: second line\r\n\r\n'
    b"data: [DONE]\r\r"
    b"data:x\n\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    bounds = sorted({0, len(TRANSCRIPT), *cuts})
    pieces = [TRANSCRIPT[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse_all(SseParser(), pieces) == parse_all(SseParser(), [TRANSCRIPT])
    assert parse_all(SseParser(), [TRANSCRIPT]) == [
        b'{"type":"message_start"}',
        b'{"a":"h\xc3\xa9llo"}\nsecond line',
        b"[DONE]",
        b"x",
    ]
