-- Per-stream setting: how far back (seconds) viewers may rewind a live broadcast (its DVR
-- window); 0 turns DVR off. Segments stay in the store that long after they leave the live
-- window. Portable SQL: runs on SQLite and PostgreSQL.
ALTER TABLE streams ADD COLUMN dvr_window BIGINT NOT NULL DEFAULT 7200;
