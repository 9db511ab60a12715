-- The control plane: broadcast sessions, admin API tokens, stream settings.
-- Portable SQL: runs on SQLite and PostgreSQL.

-- streams.key_hash holds the one active key's hash: `h1:` + HMAC-SHA256 keyed with the server
-- secret (a bare 64-hex value is an earlier unkeyed SHA-256, upgraded at its next use), or
-- `revoked:{id}` when the key was revoked without a replacement.
ALTER TABLE streams ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;

-- One row per broadcast. `id` is also the recording's id.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    stream_id     TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
    -- live | reconnecting | ended
    state         TEXT NOT NULL,
    ladder        TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    video_codec   TEXT,
    width         BIGINT,
    height        BIGINT,
    fps           DOUBLE PRECISION,
    audio_codec   TEXT,
    -- bits per second over the whole session, written at the end
    bitrate       BIGINT,
    last_segment  BIGINT
);

CREATE INDEX sessions_stream ON sessions(stream_id);
CREATE INDEX sessions_state ON sessions(state);

-- Admin API bearer tokens: only their SHA-256 is stored.
CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
