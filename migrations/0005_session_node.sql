-- Several nodes share one database: each session names the node its publisher reached, so a
-- node restarting ends only its own orphaned sessions. Portable SQL: SQLite and PostgreSQL.
ALTER TABLE sessions ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
