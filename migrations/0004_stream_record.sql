-- Per-stream setting: keep each broadcast as a VOD recording (1, the default) or not (0).
-- An integer, not BOOLEAN: sqlx's Any driver cannot decode SQLite booleans.
-- Portable SQL: runs on SQLite and PostgreSQL.
ALTER TABLE streams ADD COLUMN record BIGINT NOT NULL DEFAULT 1;
