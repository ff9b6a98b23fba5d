"""``params``: one declaration per endpoint — what the route checks and what the document
lists. The HTTP side (every operation of a real collector) is
``test_openapi_conformance.py::test_an_operation_takes_exactly_the_parameters_it_documents``."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from llmtally.query import QueryError
from llmtally.server.analytics import EVENTS_QUERY
from llmtally.server.observability import SLO_QUERY
from llmtally.server.params import (
    CORRELATION_ID_SCHEMA,
    END,
    MODEL,
    TAGS,
    QueryParam,
    QuerySpec,
    parse_int,
)

SPEC = QuerySpec(END, MODEL, TAGS)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="none"),
        pytest.param("end=5&model=gpt-4o", id="declared"),
        pytest.param("tag=a:1&tag=b:2", id="list-repeated"),
        pytest.param("model=", id="empty-string-filter"),
    ],
)
def test_declared_parameters_pass(query: str) -> None:
    SPEC.check(QueryParams(query))


@pytest.mark.parametrize(
    ("query", "parameter", "message"),
    [
        pytest.param("modle=gpt-4o", "modle", "unknown parameter", id="typo"),
        pytest.param("end=5&x=1", "x", "unknown parameter", id="unknown-after-known"),
        pytest.param("end=1&end=9", "end", "given more than once", id="twice"),
        pytest.param("end=", "end", "must not be empty", id="empty-integer"),
        pytest.param("tag=", "tag", "must not be empty", id="empty-tag"),
        pytest.param("y" * 100 + "=1", "y" * 64, "unknown parameter", id="long-name-cut"),
    ],
)
def test_other_parameters_are_refused_naming_them(query: str, parameter: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        SPEC.check(QueryParams(query))
    assert (caught.value.parameter, caught.value.message) == (parameter, message)


def test_no_parameters_refuses_any() -> None:
    QuerySpec().check(QueryParams(""))
    with pytest.raises(QueryError, match="limit: unknown parameter"):
        QuerySpec().check(QueryParams("limit=1"))


@pytest.mark.parametrize(
    ("schema", "allowed"),
    [
        pytest.param({"type": "string"}, True, id="string"),
        pytest.param({"type": "string", "maxLength": 256}, True, id="bounded-string"),
        pytest.param({"type": "string", "minLength": 1}, False, id="min-length"),
        pytest.param(CORRELATION_ID_SCHEMA, False, id="pattern-refusing-empty"),
        pytest.param(dict(SLO_QUERY.params[0].schema), True, id="pattern-allowing-empty"),
        pytest.param({"type": "integer"}, False, id="integer"),
        pytest.param({"type": "boolean"}, False, id="boolean"),
        pytest.param({"enum": ["a", "b"]}, False, id="enum"),
        pytest.param({"enum": ["", "a"]}, True, id="enum-with-empty"),
    ],
)
def test_an_empty_value_is_allowed_as_the_schema_says(
    schema: dict[str, object], allowed: bool
) -> None:
    assert QueryParam("p", schema, "").allows_empty is allowed


def test_the_document_lists_the_declaration() -> None:
    listed = [p.openapi() for p in EVENTS_QUERY]
    assert [p["name"] for p in listed] == [p.name for p in EVENTS_QUERY]
    tag = next(p for p in listed if p["name"] == "tag")
    assert (tag["style"], tag["explode"], tag["schema"]["type"]) == ("form", True, "array")
    assert all(p["in"] == "query" and "style" not in p for p in listed if p["name"] != "tag")
    with pytest.raises(ValueError, match="twice"):
        QuerySpec(END, END)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("1700000000", 1_700_000_000, id="seconds"),
        pytest.param("-1", -1, id="negative"),
        pytest.param("1_000", None, id="underscore"),
        pytest.param(" 1", None, id="space"),
        pytest.param("+1", None, id="plus"),
        pytest.param("\u0661\u0662", None, id="arabic-indic-digits"),
        pytest.param("\u00b9", None, id="superscript"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("", None, id="empty"),
        pytest.param("9" * 31, None, id="too-long"),
    ],
)
def test_parse_int_takes_ascii_digits_only(raw: str, value: int | None) -> None:
    assert parse_int(raw) == value
