"""Schemathesis against a real ``llmtally serve``: every operation of ``/openapi.json``,
called with a token good for every scope, answers without a 5xx and as the document
says (status codes, content types, headers, response schemas, and refusing what the
document says is invalid).

The schema is built in-process from the same code the server runs (``build_openapi``);
``test_the_served_document_is_the_one_tested`` checks the server serves exactly it.
(``schemathesis.pytest.from_fixture`` would load it from the server, but does not work
with pytest 9.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import hypothesis
import msgspec
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance

from llmtally.query import MAX_BUCKETS, WINDOWS
from llmtally.server import create_app
from llmtally.server.auth import Auth
from llmtally.server.openapi import build_openapi
from llmtally.storage import MemoryStorage

from .collector import TOKEN_ENV, Collector, start_collector

ALL_SCOPES_TOKEN = "all-scopes-token-5a1e"
EXAMPLES = 25  # per operation: the whole module stays well under 20 s

_RANGED = ("/analytics/events", "/analytics/aggregate", "/analytics/export")
DOCUMENT = build_openapi(create_app(MemoryStorage(), auth=Auth(insecure=True)).routes)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def api_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    workdir: Path = tmp_path_factory.mktemp("schemathesis")
    tokens = {name: f"{value},{ALL_SCOPES_TOKEN}" for name, value in TOKEN_ENV.items()}
    server = start_collector(workdir, tokens=tokens)
    try:
        yield server
    finally:
        assert server.terminate() == 0, server.log_text()


def test_the_served_document_is_the_one_tested(api_collector: Collector) -> None:
    served = httpx2.get(f"{api_collector.url}/openapi.json", timeout=10.0)
    assert served.status_code == 200
    assert served.json() == msgspec.json.decode(msgspec.json.encode(DOCUMENT))


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_every_operation_conforms(case: schemathesis.Case, api_collector: Collector) -> None:
    # What OpenAPI cannot say (a rule across parameters, an opaque cursor) may refuse a
    # schema-valid request with a 400 naming the parameter (tested in
    # test_analytics_http.py::test_bad_parameters_are_400_naming_it); every other check
    # still runs, a 5xx included.
    refusable = _may_refuse_valid(case)
    case.call_and_validate(
        base_url=api_collector.url,
        headers={"Authorization": f"Bearer {ALL_SCOPES_TOKEN}"},
        excluded_checks=[positive_data_acceptance] if refusable else None,
    )


def _may_refuse_valid(case: schemathesis.Case) -> bool:
    """Whether a schema-valid ``case`` may still be refused: an ``end`` before the
    ``start`` (given, or defaulted to now), a ``window`` that makes too many buckets,
    or a ``cursor`` this API did not make."""
    query = case.query if isinstance(case.query, dict) else {}
    if case.path not in _RANGED:
        return False
    now = int(time.time()) + 1
    end = _int(query.get("end"))
    end = now if end is None else end
    start = _int(query.get("start"))
    start = max(0, end - 3_600) if start is None else start
    if start > end:
        return True
    window = WINDOWS.get(str(query.get("window")))
    if window is not None and (end - start) * 1000 // window > MAX_BUCKETS:
        return True
    return "cursor" in query


def _int(value: object) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
