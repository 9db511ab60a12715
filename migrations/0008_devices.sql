-- Devices: cameras that stream RTP to a stream, controlled over the signaling socket
-- (`devices::signaling`). Portable SQL: SQLite and PostgreSQL.
--
-- token_hash holds the device token's keyed hash (`h1:` + HMAC-SHA256 with the server secret,
-- like stream keys), or `revoked:{id}` when the token was revoked without a replacement.
-- state/last_seen/node_id are presence: written by the node the device's signaling socket is
-- connected to, on every change and at most every few seconds while it is online.
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    stream_id   TEXT NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    -- offline | online | streaming
    state       TEXT NOT NULL DEFAULT 'offline',
    last_seen   BIGINT,
    node_id     TEXT,
    created_at  BIGINT NOT NULL
);

CREATE INDEX devices_stream ON devices(stream_id);
