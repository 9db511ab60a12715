-- A recording's size in bytes (its segments, every rendition), written when it ends; empty for
-- recordings finished before this column, or by crash recovery.
-- Portable SQL: runs on SQLite and PostgreSQL.
ALTER TABLE recordings ADD COLUMN size_bytes BIGINT;
