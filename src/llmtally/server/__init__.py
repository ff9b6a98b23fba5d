"""The collector: an ASGI app (Starlette) that ingests synced events and serves queries.

Needs the ``server`` extra. ``create_app(storage, auth=Auth.from_env(os.environ))`` builds
the app; ``llmtally serve`` runs it under uvicorn. Route groups live in their own modules
(``ingest.py``, ...), each contributing ``routes(ctx)``.
"""

from __future__ import annotations

from .app import create_app
from .auth import Auth, Scope
from .context import ServerContext

__all__ = ["Auth", "Scope", "ServerContext", "create_app"]
