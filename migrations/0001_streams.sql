-- Streams and their recordings. Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE streams (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    playback_id  TEXT NOT NULL UNIQUE,
    -- SHA-256 of the stream key, hex; the key itself is never stored
    key_hash     TEXT NOT NULL UNIQUE,
    -- segment numbers never repeat for a stream, across broadcasts (segments are cached as
    -- immutable by CDNs)
    next_segment BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

CREATE TABLE recordings (
    id          TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    duration_ms BIGINT
);

CREATE INDEX recordings_stream ON recordings(stream_id);
