"""The request record of ``LlmTallyMiddleware`` (routiium's shape) and its pure helpers:
client IP resolution behind trusted proxies, IP anonymisation, keyed API key ids."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

import msgspec

from .._exceptions import ConfigurationError

__all__ = [
    "AuthMetadata",
    "IPNetwork",
    "PerformanceMetrics",
    "RequestMetadata",
    "RequestRecord",
    "ResponseMetadata",
    "RoutingMetadata",
    "anonymize_ip",
    "api_key_id",
    "networks",
    "resolve_client_ip",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HEADER: Final = 256


# --- the record ---------------------------------------------------------------------------


class RequestMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What was asked. ``model``/``stream``/``message_count`` come from the JSON body (as far
    as the app read it); ``input_tokens`` from the usage the response reported."""

    endpoint: str
    method: str
    model: str | None = None
    stream: bool = False
    size_bytes: int = 0
    message_count: int | None = None
    input_tokens: int | None = None
    user_agent: str | None = None
    client_ip: str | None = None


class ResponseMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What was answered. ``success`` is false for status ≥ 400, an error event in a stream,
    a client that went away before the end, or an app that raised."""

    status_code: int
    size_bytes: int = 0
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    success: bool = True
    error_code: str | None = None
    error_message: str | None = None


class PerformanceMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Milliseconds from the request's arrival: to the end of the response
    (``duration_ms``), to its first body byte (``ttfb_ms``), to its first content delta
    (``ttft_ms``, streams); ``upstream_duration_ms`` sums the upstream calls made through
    ``LlmTallyTransport`` while handling it."""

    duration_ms: float
    ttfb_ms: float | None = None
    ttft_ms: float | None = None
    upstream_duration_ms: float | None = None


class AuthMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """``authenticated``: a key was presented and the app did not answer 401/403.
    ``api_key_id`` is the keyed hash, never the key."""

    authenticated: bool = False
    api_key_id: str | None = None
    api_key_label: str | None = None
    auth_method: str | None = None


class RoutingMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """Where the request went: ``backend`` (provider) and ``upstream_mode`` (``chat``,
    ``responses``, ``completions``, ``embeddings``, ``messages``)."""

    backend: str | None = None
    upstream_mode: str | None = None


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One request/response cycle (routiium's ``AnalyticsEvent`` shape).

    ``event_id`` is a UUIDv7; when ``recorded`` is true it is also the id of the LLM event
    the middleware recorded for the request. ``upstream_calls`` counts the calls made
    through ``LlmTallyTransport`` while handling it (each recorded by the transport).
    """

    event_id: str
    timestamp_ms: int
    request: RequestMetadata
    response: ResponseMetadata | None
    performance: PerformanceMetrics
    auth: AuthMetadata
    routing: RoutingMetadata
    upstream_calls: int = 0
    recorded: bool = False


# --- pure helpers ---------------------------------------------------------------------------


def api_key_id(key: str, secret: bytes) -> str:
    """The id stored for an API key: ``"key_"`` + the first 24 hex digits of
    HMAC-SHA256(secret, key). Stable for one secret; the key cannot be recovered from it,
    nor guessed without the secret."""
    digest = hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "key_" + digest.hexdigest()[:24]


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # "203.0.113.7:5678"
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Sequence[IPNetwork]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def resolve_client_ip(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> str | None:
    """The client's address: ``peer`` unless it is a trusted proxy; then the rightmost
    ``X-Forwarded-For`` hop that is not a trusted proxy (hops left of it are set by the
    client and can be forged). A malformed hop stops the walk at the last trusted one."""
    if peer is None:
        return None
    peer_ip = _parse_ip(peer)
    if peer_ip is None:
        return peer[:MAX_HEADER]
    if not forwarded_for or not _trusted(peer_ip, trusted_proxies):
        return str(peer_ip)
    nearest = peer_ip
    for hop in reversed(forwarded_for.split(",")):
        if not hop.strip():
            continue
        ip = _parse_ip(hop)
        if ip is None:
            break
        if not _trusted(ip, trusted_proxies):
            return str(ip)
        nearest = ip
    return str(nearest)


def anonymize_ip(ip: str) -> str:
    """``ip`` cut to its network: /24 for IPv4 (``203.0.113.0``), /48 for IPv6
    (``2001:db8:abcd::``); IPv4-mapped IPv6 counts as IPv4. Anything that is not an IP
    address is returned unchanged."""
    parsed = _parse_ip(ip)
    if parsed is None:
        return ip
    prefix = 24 if parsed.version == 4 else 48
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False).network_address)


def networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse IPs and CIDR networks; raises ``ConfigurationError`` for anything else."""
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies: {item!r} is not an IP or network") from exc
    return tuple(nets)
