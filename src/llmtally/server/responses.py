"""JSON responses shared by every collector route, and the app's exception handlers.

Every answer the collector gives is JSON, errors included: ``{"error": "..."}``. The
handlers below make sure that neither a routing error (404, 405) nor an unexpected
exception ever produces an HTML or plain-text page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "ErrorBody",
    "error_response",
    "exception_handlers",
    "json_response",
]

logger: Final = logging.getLogger("llmtally.server")

_encode: Final = msgspec.json.Encoder().encode
_JSON: Final = "application/json"


class ErrorBody(msgspec.Struct, frozen=True):
    """The body of every error response."""

    error: str


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``content`` (a msgspec Struct or plain data) encoded with msgspec as JSON."""
    return Response(_encode(content), status_code, headers, media_type=_JSON)


def error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """``{"error": message}`` with ``status_code``."""
    return json_response(ErrorBody(message), status_code, headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware calls this, then re-raises so the server logs
    # the traceback; the client only sees a JSON 500.
    return error_response(500, "internal server error")


def exception_handlers() -> dict[Any, Any]:
    """The handlers ``create_app`` installs: JSON for HTTP errors and for crashes."""
    return {HTTPException: _http_exception, Exception: _unexpected}
