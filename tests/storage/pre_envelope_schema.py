"""The schema of llmtally before the event envelope, verbatim: the DDL that release's
migrations ran (SQLite versions 1-2, PostgreSQL version 1) and its event columns, to
build old databases that the current code must open, upgrade and read back."""

from __future__ import annotations

from typing import Final

SQLITE_VERSION: Final = 2
SQLITE_DDL: Final = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    agent_id TEXT,
    provider_id TEXT,
    provider TEXT,
    model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_input_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    pricing_status TEXT,
    duration_ms REAL,
    ttft_ms REAL,
    error_code TEXT,
    error_message TEXT,
    status_code INTEGER,
    sync_state INTEGER NOT NULL DEFAULT 0,
    extra BLOB
);
CREATE INDEX events_timestamp ON events (timestamp_ms);
CREATE INDEX events_pending ON events (id) WHERE sync_state = 0;
CREATE TABLE stats_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_rowid INTEGER NOT NULL,
    series BLOB NOT NULL
);
CREATE INDEX events_time_id ON events (timestamp_ms, event_id);
DROP INDEX events_timestamp;
CREATE TABLE rollups (
    period_ms INTEGER NOT NULL,
    dim TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    value TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    failed_requests INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_input_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    unpriced_requests INTEGER NOT NULL DEFAULT 0,
    unpriced_input_tokens INTEGER NOT NULL DEFAULT 0,
    unpriced_output_tokens INTEGER NOT NULL DEFAULT 0,
    duration_count INTEGER NOT NULL DEFAULT 0,
    duration_sum REAL NOT NULL DEFAULT 0,
    duration_min REAL,
    duration_max REAL,
    ttft_count INTEGER NOT NULL DEFAULT 0,
    ttft_sum REAL NOT NULL DEFAULT 0,
    ttft_min REAL,
    ttft_max REAL,
    sketches BLOB,
    mix BLOB,
    PRIMARY KEY (period_ms, dim, start_ms, value)
) WITHOUT ROWID;
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1), (2);
"""

POSTGRES_VERSION: Final = 1
POSTGRES_DDL: Final = """
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    agent_id TEXT,
    provider_id TEXT,
    provider TEXT,
    model TEXT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_input_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    pricing_status TEXT,
    duration_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    error_code TEXT,
    error_message TEXT,
    status_code INTEGER,
    sync_state SMALLINT NOT NULL DEFAULT 0,
    extra BYTEA,
    UNIQUE (event_id)
);
CREATE INDEX events_time_id ON events (timestamp_ms, event_id);
CREATE INDEX events_pending ON events (id) WHERE sync_state = 0;
CREATE TABLE stats_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_rowid BIGINT NOT NULL,
    series BYTEA NOT NULL
);
CREATE TABLE rollups (
    period_ms BIGINT NOT NULL,
    dim TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    value TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    failed_requests BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_input_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    unpriced_requests BIGINT NOT NULL DEFAULT 0,
    unpriced_input_tokens BIGINT NOT NULL DEFAULT 0,
    unpriced_output_tokens BIGINT NOT NULL DEFAULT 0,
    duration_count BIGINT NOT NULL DEFAULT 0,
    duration_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    duration_min DOUBLE PRECISION,
    duration_max DOUBLE PRECISION,
    ttft_count BIGINT NOT NULL DEFAULT 0,
    ttft_sum DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_min DOUBLE PRECISION,
    ttft_max DOUBLE PRECISION,
    sketches BYTEA,
    mix BYTEA,
    PRIMARY KEY (period_ms, dim, start_ms, value)
);
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
"""

COLUMNS: Final = (
    "event_id",
    "event_type",
    "timestamp_ms",
    "agent_id",
    "provider_id",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "cost_nanos",
    "pricing_status",
    "duration_ms",
    "ttft_ms",
    "error_code",
    "error_message",
    "status_code",
    "sync_state",
    "extra",
)
