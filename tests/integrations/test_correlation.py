"""Correlation ids from headers: ``x-correlation-id`` first, else a valid ``traceparent``."""

from __future__ import annotations

import pytest

from llmtally.integrations._correlation import from_headers, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(f"00-{TRACE}-{SPAN}-01", (TRACE, SPAN), id="valid"),
        pytest.param(f" 00-{TRACE.upper()}-{SPAN}-00 ", (TRACE, SPAN), id="case-and-space"),
        pytest.param(f"01-{TRACE}-{SPAN}-01-future", (TRACE, SPAN), id="newer-version-extra"),
        pytest.param(f"00-{TRACE}-{SPAN}-01-extra", None, id="v00-extra"),
        pytest.param(f"ff-{TRACE}-{SPAN}-01", None, id="version-ff"),
        pytest.param(f"00-{'0' * 32}-{SPAN}-01", None, id="zero-trace"),
        pytest.param(f"00-{TRACE}-{'0' * 16}-01", None, id="zero-span"),
        pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", None, id="short"),
        pytest.param("garbage", None, id="garbage"),
    ],
)
def test_parse_traceparent(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_traceparent(value) == expected


def test_x_correlation_id_wins_and_a_bad_one_falls_back() -> None:
    tp = (b"traceparent", f"00-{TRACE}-{SPAN}-01".encode())
    assert from_headers([tp, (b"X-Correlation-ID", b" req-1 ")]) == ("req-1", None)
    assert from_headers([(b"x-correlation-id", b"bad value"), tp]) == (TRACE, SPAN)
    assert from_headers([(b"x-correlation-id", b"\xff" * 200)]) == (None, None)
    assert from_headers([]) == (None, None)
