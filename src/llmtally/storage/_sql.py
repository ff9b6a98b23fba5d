"""SQL text shared by the SQLite and PostgreSQL backends (placeholders differ: ``?``/``$n``).

Only the placeholder style differs between the two dialects for these statements; the
values are always bound, never formatted into the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .base import Cursor, EventFilter
from .rows import COLUMNS

__all__ = [
    "EVENT_SELECT",
    "REQUEST_SELECT",
    "REQUEST_TYPES",
    "Params",
    "dollar",
    "events_where",
    "keyset",
    "postgres_tag",
    "qmark",
    "sqlite_tag",
]

REQUEST_TYPES: Final = "('llm_request_completed', 'llm_request_failed')"

REQUEST_SELECT: Final = (
    "timestamp_ms, event_id, event_type = 'llm_request_failed', model, provider, "
    "coalesce(agent_id, ''), coalesce(provider_id, ''), extra, input_tokens, output_tokens, "
    "cached_input_tokens, cache_write_input_tokens, cost_nanos, "
    "coalesce(pricing_status = 'unpriced', false), duration_ms, ttft_ms"
)
"""The columns of a ``RequestRow``, in order (``extra`` where the row has ``endpoint``)."""

EVENT_SELECT: Final = ", ".join(COLUMNS)


class Params:
    """Collects bound values and hands out the matching placeholders."""

    def __init__(self, style: Callable[[int], str]) -> None:
        self.values: list[Any] = []
        self._style = style

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self._style(len(self.values))


def qmark(n: int) -> str:
    """SQLite's placeholder."""
    return "?"


def dollar(n: int) -> str:
    """PostgreSQL's placeholder."""
    return f"${n}"


def keyset(
    p: Params,
    start: int,
    end: int,
    after: Cursor | None,
    time_col: str = "timestamp_ms",
    key_col: str = "event_id",
    key_cast: str = "",
) -> str:
    """``time_col`` in ``[start, end)`` and ``(time_col, key_col) > after``, written so
    that an index on ``(time_col, key_col)`` serves it as one range scan. A cursor
    before ``start`` is ignored."""
    if after is None or after[0] < start:
        return f"{time_col} >= {p(start)} AND {time_col} < {p(end)}"
    return (
        f"{time_col} >= {p(after[0])} AND {time_col} < {p(end)} "
        f"AND ({time_col} > {p(after[0])} OR {key_col} > {p(after[1])}{key_cast})"
    )


TagMatch = Callable[[Params, str, str], str]
"""``(params, key, value) → SQL``: the dialect's test that tag ``key`` equals ``value``."""


def sqlite_tag(p: Params, key: str, value: str) -> str:
    """SQLite: ``tags`` is JSON text; the key goes in a quoted JSON path (keys cannot hold
    ``"``, see ``llmtally._envelope``), bound like the value."""
    path = '$."' + key + '"'
    return f"json_extract(tags, {p(path)}) = {p(value)}"


def postgres_tag(p: Params, key: str, value: str) -> str:
    """PostgreSQL: ``tags`` is JSONB."""
    return f"tags ->> {p(key)}::text = {p(value)}::text"


def events_where(
    p: Params,
    flt: EventFilter,
    after: Cursor | None,
    key_cast: str = "",
    tag_match: TagMatch = sqlite_tag,
) -> str:
    """The ``WHERE`` clause (without the keyword) for ``flt`` after ``after``."""
    clauses = [keyset(p, flt.start_ms, flt.end_ms, after, key_cast=key_cast)]
    for column in ("model", "provider", "agent_id", "provider_id", "event_type", "correlation_id"):
        value = getattr(flt, column)
        if value is not None:
            clauses.append(f"{column} = {p(value)}")
    if flt.success is True:
        clauses.append("event_type = 'llm_request_completed'")
    elif flt.success is False:
        clauses.append("event_type = 'llm_request_failed'")
    for key, value in flt.tags:
        clauses.append(tag_match(p, key, value))
    return " AND ".join(clauses)
