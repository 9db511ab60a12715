-- One owner per stream across nodes: a node claims a stream before it accepts a publish and
-- renews the claim while the broadcast runs; another node may take it only once it expired.
-- Portable SQL: SQLite and PostgreSQL.
CREATE TABLE stream_claims (
    stream_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
