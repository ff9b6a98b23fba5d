"""Configuration values passed to ``EventStore``: frozen, validated at construction."""

from __future__ import annotations

import msgspec

from ._exceptions import ConfigurationError

__all__ = ["SyncConfig"]


class SyncConfig(msgspec.Struct, frozen=True):
    """Where and how the store syncs request events to a collector.

    ``SyncConfig(server_url, ic_token)``; the rest have defaults. ``sync_interval`` (s):
    sync at least this often; ``batch_threshold``: sync at once when this many events are
    pending; ``timeout`` (s): per HTTP request; ``max_batch``: events per request;
    ``shutdown_timeout`` (s): the last sync attempt when the store closes;
    ``max_backoff`` (s): retry delays double from ``min_backoff`` up to this;
    ``max_retry_after`` (s): a collector's ``Retry-After`` is honoured up to this.
    """

    server_url: str
    ic_token: str
    sync_interval: float = 30.0
    batch_threshold: int = 10
    timeout: float = 30.0
    max_batch: int = 500
    shutdown_timeout: float = 10.0
    min_backoff: float = 1.0
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if not self.server_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"server_url must be an http(s) URL, got {self.server_url!r}")
        if not self.ic_token:
            raise ConfigurationError("ic_token must not be empty")
        if self.sync_interval <= 0 or self.timeout <= 0 or self.shutdown_timeout < 0:
            raise ConfigurationError("sync_interval and timeout must be > 0")
        if self.batch_threshold < 1 or self.max_batch < 1:
            raise ConfigurationError("batch_threshold and max_batch must be at least 1")
        if not 0 < self.min_backoff <= self.max_backoff:
            raise ConfigurationError("need 0 < min_backoff <= max_backoff")

    def __repr__(self) -> str:  # never show the token
        return f"SyncConfig(server_url={self.server_url!r}, ic_token='***')"
