-- Recordings of deleted streams whose objects (vod/{id}/) may still be in the store: written in
-- the same transaction that deletes the stream, removed by the sweeper once the objects are gone
-- and a broadcast that was still finishing can no longer add any. Portable SQL: SQLite and
-- PostgreSQL.
CREATE TABLE deleted_recordings (
    id TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
