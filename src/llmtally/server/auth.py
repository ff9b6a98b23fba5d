"""Bearer-token authorization for the collector.

Three token lists come from the environment, each comma-separated:

=========================  =================================================
``LLMTALLY_INGEST_TOKENS``  ``Scope.INGEST``: post events (what a syncer holds)
``LLMTALLY_READ_TOKENS``    ``Scope.READ``: query endpoints, metrics, dashboard
``LLMTALLY_ADMIN_TOKENS``   ``Scope.ADMIN`` and ``Scope.READ``: clear, plus reads
=========================  =================================================

An admin token can read but cannot ingest: ingest tokens are handed to every router, so
they are kept apart from the tokens that can see or delete the data, and a leaked admin
token cannot be used to inject events. A missing token, an unknown token and a token of
the wrong scope all get the same 401 (``WWW-Authenticate: Bearer``), so a response never
tells which tokens exist.

Comparison is constant time: the presented token and every configured token are hashed
to SHA-256 digests (equal length, so ``hmac.compare_digest`` leaks nothing about length),
and the presented digest is compared with *every* configured digest, without stopping at
a match. Tokens are never logged or echoed.

Browsers (the dashboard, its ``EventSource``) cannot send an ``Authorization`` header, so
a read token can be exchanged once for a *read session* cookie (``SESSION_COOKIE``,
issued by the dashboard with ``HttpOnly; SameSite=Strict``). Its value is
``<expiry>.<mac>``: ``HMAC-SHA256(key=SHA-256(token), "llmtally-session:<expiry>")``. It
holds no token, needs no server-side state (replicas sharing the tokens accept each
other's sessions), stops working when the token is removed from the configuration or
when it expires, and only ever grants ``Scope.READ`` — never ingest or admin, so a
cookie sent along by a browser can never change data.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from .._exceptions import ConfigurationError
from .responses import error_response

__all__ = ["ENV_VARS", "SESSION_COOKIE", "SESSION_TTL_S", "Auth", "Endpoint", "Scope"]

Endpoint = Callable[[Request], Awaitable[Response]]


class Scope(enum.IntFlag):
    """What a token allows. An admin token carries ``ADMIN | READ``."""

    INGEST = 1
    READ = 2
    ADMIN = 4


ENV_VARS: Final[Mapping[str, Scope]] = {
    "LLMTALLY_INGEST_TOKENS": Scope.INGEST,
    "LLMTALLY_READ_TOKENS": Scope.READ,
    "LLMTALLY_ADMIN_TOKENS": Scope.ADMIN | Scope.READ,
}

_CHALLENGE: Final = 'Bearer realm="llmtally"'
SESSION_COOKIE: Final = "llmtally_session"
SESSION_TTL_S: Final = 12 * 3600
"""How long a read session lasts."""
_SESSION_CONTEXT: Final = b"llmtally-session:"
_MAX_SESSION_CHARS: Final = 100
_CHALLENGE_INVALID: Final = 'Bearer realm="llmtally", error="invalid_token"'


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _split(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


class Auth:
    """The configured tokens and the check every protected endpoint makes.

    Build it with ``from_env`` (the server) or ``Auth({...})`` (tests, embedding).
    ``insecure=True`` opens every endpoint; it is only meant for local experiments.
    """

    __slots__ = ("_grants", "insecure")

    def __init__(self, tokens: Mapping[str, Scope] | None = None, *, insecure: bool = False):
        grants: dict[bytes, Scope] = {}
        for token, scope in (tokens or {}).items():
            if not token:
                raise ConfigurationError("an API token must not be empty")
            d = _digest(token)
            grants[d] = grants.get(d, Scope(0)) | scope
        self._grants: tuple[tuple[bytes, int], ...] = tuple((d, int(s)) for d, s in grants.items())
        self.insecure = insecure

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, insecure: bool = False) -> Auth:
        """Tokens from ``LLMTALLY_{INGEST,READ,ADMIN}_TOKENS``.

        Raises ``ConfigurationError`` when none is set and ``insecure`` is false: a
        collector without tokens must be an explicit choice.
        """
        tokens: dict[str, Scope] = {}
        for var, scope in ENV_VARS.items():
            for token in _split(environ.get(var, "")):
                tokens[token] = tokens.get(token, Scope(0)) | scope
        if not tokens and not insecure:
            raise ConfigurationError(
                "no API tokens configured: set "
                + ", ".join(ENV_VARS)
                + " (comma-separated), or pass --insecure-no-auth"
            )
        return cls(tokens, insecure=insecure)

    @property
    def token_count(self) -> int:
        """How many distinct tokens are configured (never the tokens themselves)."""
        return len(self._grants)

    def __repr__(self) -> str:
        return f"Auth(tokens={self.token_count}, insecure={self.insecure})"

    def scopes_of(self, token: str) -> Scope:
        """The scopes ``token`` grants (``Scope(0)`` for an unknown token), in time that
        depends only on the number of configured tokens."""
        presented = _digest(token)
        granted = 0
        for digest, scope in self._grants:
            # No early exit and no branch on the outcome: every digest is compared.
            granted |= scope * hmac.compare_digest(presented, digest)
        return Scope(granted)

    def allows(self, authorization: str | None, scope: Scope) -> bool:
        """Whether an ``Authorization`` header value grants ``scope``."""
        if self.insecure:
            return True
        token = _bearer_token(authorization)
        if token is None:
            return False
        return scope in self.scopes_of(token)

    def issue_session(self, token: str, now_s: float | None = None) -> str | None:
        """A read-session cookie value for ``token``, valid ``SESSION_TTL_S`` seconds;
        ``None`` unless ``token`` grants ``Scope.READ``."""
        if Scope.READ not in self.scopes_of(token):
            return None
        expires = int(time.time() if now_s is None else now_s) + SESSION_TTL_S
        mac = _session_mac(_digest(token), expires)
        return f"{expires}.{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"

    def session_allows_read(self, value: str | None, now_s: float | None = None) -> bool:
        """Whether a session cookie value is unexpired and was issued for a token that is
        still configured with ``Scope.READ``. Every configured token is tried (constant
        time in the number of tokens, like ``scopes_of``)."""
        if not value or len(value) > _MAX_SESSION_CHARS:
            return False
        expiry_text, _, mac_text = value.partition(".")
        try:
            expires = int(expiry_text)
            mac = base64.urlsafe_b64decode(mac_text + "=" * (-len(mac_text) % 4))
        except (ValueError, binascii.Error):
            return False
        if expires <= (time.time() if now_s is None else now_s):
            return False
        granted = 0
        for digest, scope in self._grants:
            ok = hmac.compare_digest(_session_mac(digest, expires), mac)
            granted |= (scope & int(Scope.READ)) * ok
        return bool(granted)

    def request_allows(self, request: Request, scope: Scope) -> bool:
        """Whether a request may use ``scope``: by its ``Authorization`` header or, for
        ``Scope.READ`` and without such a header, by its read-session cookie."""
        authorization = request.headers.get("authorization")
        if self.allows(authorization, scope):
            return True
        return (
            scope == Scope.READ
            and authorization is None
            and self.session_allows_read(request.cookies.get(SESSION_COOKIE))
        )

    def protect(self, scope: Scope, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind a token check: a request without a token granting
        ``scope`` (or, for reads, a valid read-session cookie) gets 401 with
        ``WWW-Authenticate: Bearer`` and never reaches it."""

        async def guarded(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            if not self.request_allows(request, scope):
                challenge = _CHALLENGE if authorization is None else _CHALLENGE_INVALID
                return error_response(
                    401, "missing or invalid API token", {"WWW-Authenticate": challenge}
                )
            return await endpoint(request)

        guarded.__name__ = getattr(endpoint, "__name__", "guarded")
        guarded.__doc__ = endpoint.__doc__
        return guarded


def _session_mac(token_digest: bytes, expires: int) -> bytes:
    return hmac.new(token_digest, _SESSION_CONTEXT + str(expires).encode(), hashlib.sha256).digest()


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
