"""Schemathesis against a real ``llmtally serve``: every operation of ``/openapi.json``,
called with a token good for every scope, answers without a 5xx and as the document
says (status codes, content types, headers, response schemas, and refusing what the
document says is invalid); and each operation takes exactly the query parameters the
document lists.

The schema is built in-process from the same code the server runs (``build_openapi``);
``test_the_served_document_is_the_one_tested`` checks the server serves exactly it.
(``schemathesis.pytest.from_fixture`` would load it from the server, but does not work
with pytest 9.)

``GET /analytics/live`` never ends on its own, so its calls read the status, the headers
and the first frame (the opening keepalive, or the whole error body) and hang up; what
the stream carries afterwards is tested in ``test_live.py``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import hypothesis
import msgspec
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance

from llmtally.query import MAX_BUCKETS, MAX_CELLS, METRICS, WINDOWS
from llmtally.server import create_app
from llmtally.server.analytics import DEFAULT_EXPORT_RANGE_S, DEFAULT_RANGE_S
from llmtally.server.auth import Auth
from llmtally.server.live_route import LIVE_PATH
from llmtally.server.openapi import OPERATIONS, build_openapi
from llmtally.server.trends import DEFAULT_ANOMALY_RANGE_S
from llmtally.storage import MemoryStorage

from .collector import TOKEN_ENV, Collector, start_collector

ALL_SCOPES_TOKEN = "all-scopes-token-5a1e"
AUTH = {"Authorization": f"Bearer {ALL_SCOPES_TOKEN}"}
EXAMPLES = 10  # random ones per operation, after schemathesis's coverage phase (the
# boundary and invalid values of every parameter): the module stays around 15 s

# Range endpoints: the span ``start`` defaults to, and the window buckets default to
# (None: one bucket).
_RANGED: dict[str, tuple[int, str | None]] = {
    "/analytics/events": (DEFAULT_RANGE_S, None),
    "/analytics/aggregate": (DEFAULT_RANGE_S, None),
    "/analytics/export": (DEFAULT_EXPORT_RANGE_S, None),
    "/analytics/timeseries": (DEFAULT_RANGE_S, "1m"),
    "/analytics/anomalies": (DEFAULT_ANOMALY_RANGE_S, None),
}
# ``timeseries`` refuses more than MAX_CELLS points (groups x buckets). The groups are
# whatever schemathesis ingested, far fewer than this.
_MAX_GROUPS = 1_000
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
        # A 5xx is caught per call; a streamed export cut short after its 200 only here.
        assert "Traceback" not in server.log_text(), server.log_text()


def test_the_served_document_is_the_one_tested(served: dict[str, Any]) -> None:
    assert served == msgspec.json.decode(msgspec.json.encode(DOCUMENT))


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
    excluded = [positive_data_acceptance] if _may_refuse_valid(case) else None
    if case.path == LIVE_PATH:
        response = _call_reading_one_frame(case, api_collector.url)
        case.validate_response(
            response,
            headers=AUTH,
            excluded_checks=excluded,
            transport_kwargs={"base_url": api_collector.url, "headers": AUTH},
        )
    else:
        case.call_and_validate(base_url=api_collector.url, headers=AUTH, excluded_checks=excluded)


@pytest.fixture(scope="module")
def client(api_collector: Collector) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=api_collector.url, headers=AUTH, timeout=10.0) as c:
        yield c


@pytest.fixture(scope="module")
def served(client: httpx2.Client) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


@pytest.mark.parametrize(
    ("path", "method"),
    [pytest.param(path, method, id=f"{method.upper()} {path}") for path, method in OPERATIONS],
)
def test_an_operation_takes_exactly_the_parameters_it_documents(
    client: httpx2.Client, served: dict[str, Any], path: str, method: str
) -> None:
    """Each query parameter the served document lists is one the route takes (whatever
    its value, it is never refused as unknown); any other is refused with a 400 naming
    it, as is a parameter given twice that is not a list. An operation whose route does
    not read its query string (``Operation.query is None``) lists none and refuses none."""
    documented = served["paths"][path][method]
    query = [p for p in documented.get("parameters", ()) if p["in"] == "query"]
    op = OPERATIONS[(path, method)]
    assert {p["name"] for p in query} == (op.query.names if op.query is not None else set())

    def send(*params: tuple[str, str]) -> tuple[int, str]:
        with client.stream(method.upper(), path, params=list(params)) as r:
            if r.headers.get("content-type", "").startswith("text/event-stream"):
                return r.status_code, _first_frame(r).decode()
            return r.status_code, r.read().decode()

    for param in query:
        status, body = send((param["name"], "x"))
        assert f"{param['name']}: unknown parameter" not in body, (status, body)

    status, body = send(("not_a_parameter", "1"))
    if op.query is None:
        assert "not_a_parameter: unknown parameter" not in body, (status, body)
        return
    assert status == 400, body
    assert "not_a_parameter: unknown parameter" in body
    assert "400" in documented["responses"]
    for param in query:
        status, body = send((param["name"], "x"), (param["name"], "x"))
        if param["schema"].get("type") == "array":
            assert "given more than once" not in body, (param["name"], status, body)
        else:
            assert status == 400, (param["name"], status, body)
            assert f"{param['name']}: given more than once" in body


def _first_frame(r: httpx2.Response) -> bytes:
    """The stream up to the end of its first frame (a blank line)."""
    received = b""
    for chunk in r.iter_raw():
        received += chunk
        if b"\n\n" in received:
            break
    return received


def _call_reading_one_frame(case: schemathesis.Case, base_url: str) -> httpx2.Response:
    """Send ``case``; of an event stream keep the status, the headers and the first
    frame (the server's opening keepalive) and hang up."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=base_url, headers=AUTH)
    started = time.monotonic()
    with (
        httpx2.Client(timeout=10.0, cookies=kwargs.get("cookies") or None) as client,
        client.stream(
            kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs["headers"]
        ) as r,
    ):
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            body = _first_frame(r)
            assert body.startswith(b": keepalive\n\n"), body
        else:
            body = r.read()
        response = httpx2.Response(
            r.status_code, headers=r.headers, content=body, request=r.request
        )
    response.elapsed = datetime.timedelta(seconds=time.monotonic() - started)
    return response


def _may_refuse_valid(case: schemathesis.Case) -> bool:
    """Whether a schema-valid ``case`` may still be refused: a ``cursor`` this API did
    not make; an ``end`` before the ``start`` (given, or defaulted); a ``window`` that
    makes too many buckets; for ``timeseries``, an ``aggregation`` that means nothing for
    the metric, or too many points (buckets x groups)."""
    query = case.query if isinstance(case.query, dict) else {}
    if "cursor" in query:
        return True
    if case.path not in _RANGED:
        return False
    now = int(time.time()) + 1
    end = _int(query.get("end"))
    end = now if end is None else end
    start = _int(query.get("start"))
    span, default_window = _RANGED[case.path]
    start = max(0, end - span) if start is None else start
    if start > end:
        return True
    window = WINDOWS.get(str(query.get("window") or default_window))
    # + 2: the first bucket starts at or before ``start`` (weeks: on the Monday before).
    buckets = (end - start) * 1000 // window + 2 if window is not None else 1
    if buckets > MAX_BUCKETS:
        return True
    if case.path == "/analytics/timeseries":
        metric = str(query.get("metric") or "requests")
        aggregation = query.get("aggregation")
        if aggregation is not None and aggregation not in METRICS.get(metric, ()):
            return True
        if query.get("group_by") and buckets * _MAX_GROUPS > MAX_CELLS:
            return True
    return False


def _int(value: object) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
