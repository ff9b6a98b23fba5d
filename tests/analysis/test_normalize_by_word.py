"""``normalize_message`` works word by word (with a memo of short words): it must equal
the whole-message passes it replaced, on any text — whitespace of every kind, quotes,
ids, hex, numbers, placeholders — and whatever the memo holds."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmtally.analysis import errors
from llmtally.analysis.errors import normalize_message


def _whole_message(message: str) -> str:
    """The previous implementation: every pass over the whole message."""
    m = message
    if "'" in m or '"' in m or "`" in m:
        m = errors._QUOTED.sub("<str>", m)
    if m.count("-") >= 4:
        m = errors._UUID.sub("<uuid>", m)
    digits = errors._DIGIT.search(m) is not None
    if digits and ("_" in m or "-" in m):
        m = errors._KNOWN_ID.sub("<id>", m)
        m = errors._GENERIC_ID.sub("<id>", m)
    m = errors._HEX.sub("<hex>", m)
    if digits:
        m = errors._NUMBER.sub("<num>", m)
    return " ".join(m.split())


_PIECES = st.sampled_from(
    [
        "req_",
        "chatcmpl-",
        "sk-proj-",
        "id-",
        "0x",
        "0X",
        "deadbeef",
        "DEADBEEF",
        "abc",
        "9f",
        "7",
        "42",
        "3.5",
        ".",
        "-",
        "_",
        "'",
        '"',
        "`",
        "<",
        ">",
        "<num>",
        "<id>",
        "550e8400-e29b-41d4-a716-446655440000",
        "v1",
        "gpt-4o",
        "x",
        "Z",
        ":",
        ",",
        "é",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x1f",
        "\x85",
        "\xa0",
        "\u2003",
        "\u3000",
        "\u2028",
    ]
)
_MESSAGES = st.lists(_PIECES | st.text(max_size=6), max_size=30).map("".join)


@settings(max_examples=800, deadline=None)
@given(_MESSAGES)
@example("at 0x123456 bad")  # the shortest words each pass can match
@example("deadbeefdeadbeef")
@example("'a'")
@example("req_1 7")
@example("ab-cd-ef-01-2")
def test_word_by_word_equals_whole_message(message: str) -> None:
    assert normalize_message(message) == _whole_message(message)
    assert normalize_message(message) == _whole_message(message)  # memo warm


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_word_by_word_equals_whole_message_on_any_text(message: str) -> None:
    assert normalize_message(message) == _whole_message(message)


def test_the_word_memo_is_bounded_and_changes_no_result() -> None:
    words = [f"w{i}x_{i:012d}" for i in range(2 * errors._WORDS_SIZE)]
    for w in words:
        assert normalize_message(w) == _whole_message(w)
        assert len(errors._WORDS) <= errors._WORDS_SIZE
    long = "k" * (errors._WORD_CACHED_CHARS + 1)
    normalize_message(long)
    assert long not in errors._WORDS
