"""The middleware's pure helpers: client IP, anonymisation, key ids, configuration."""

from __future__ import annotations

import ipaddress

import pytest

from llmtally import ConfigurationError, EventStore
from llmtally.integrations.asgi import (
    LlmTallyMiddleware,
    anonymize_ip,
    api_key_id,
    resolve_client_ip,
)

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        pytest.param("198.51.100.1", "203.0.113.7", "198.51.100.1", id="untrusted-peer"),
        pytest.param("10.0.0.2", None, "10.0.0.2", id="no-header"),
        pytest.param("10.0.0.2", "203.0.113.7", "203.0.113.7", id="one-hop"),
        pytest.param("10.0.0.2", "1.1.1.1, 203.0.113.7, 10.1.1.1", "203.0.113.7", id="forged-left"),
        pytest.param("10.0.0.2", "10.9.9.9, 10.1.1.1", "10.9.9.9", id="all-trusted"),
        pytest.param("10.0.0.2", "garbage, 10.1.1.1", "10.1.1.1", id="malformed-hop"),
        pytest.param("10.0.0.2", "203.0.113.7:5678", "203.0.113.7", id="port"),
        pytest.param("::1", "[2001:db8::5]:443", "2001:db8::5", id="ipv6"),
        pytest.param("::ffff:10.0.0.2", "203.0.113.7", "203.0.113.7", id="v4-mapped-peer"),
        pytest.param(None, "203.0.113.7", None, id="no-peer"),
        pytest.param("unix-socket", "203.0.113.7", "unix-socket", id="not-an-ip"),
    ],
)
def test_resolve_client_ip(peer: str | None, xff: str | None, expected: str | None) -> None:
    assert resolve_client_ip(peer, xff, TRUSTED) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12:3456::1", "2001:db8:abcd::"),
        ("::ffff:203.0.113.77", "203.0.113.0"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_anonymize_ip(ip: str, expected: str) -> None:
    assert anonymize_ip(ip) == expected


def test_api_key_id_is_keyed_and_stable() -> None:
    a = api_key_id("sk-1", b"s" * 16)
    assert a == api_key_id("sk-1", b"s" * 16)
    assert a != api_key_id("sk-1", b"t" * 16)
    assert a != api_key_id("sk-2", b"s" * 16)
    assert a.startswith("key_") and len(a) == 28 and "sk-1" not in a


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"api_key_secret": "short"}, id="weak-secret"),
        pytest.param({"trusted_proxies": ["10.0.0.0/33"]}, id="bad-network"),
        pytest.param({"record": "sometimes"}, id="bad-record"),
    ],
)
def test_bad_configuration(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LlmTallyMiddleware(_app, EventStore(None), **options)  # type: ignore[arg-type]
