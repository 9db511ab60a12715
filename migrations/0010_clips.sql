-- Clips: a range of a live broadcast or a recording, kept as a VOD of its own under
-- `vod/{id}/` (HLS, DASH and a downloadable MP4). `stream_id` says where it came from; a clip
-- outlives its stream (it may have been shared) and goes when deleted or past its retention.
-- Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE clips (
    id            TEXT PRIMARY KEY,
    stream_id     TEXT NOT NULL,
    recording_id  TEXT,
    -- pending | ready | failed
    state         TEXT NOT NULL,
    -- the node making it (a pending clip of a node that restarted is failed at its start)
    node_id       TEXT,
    reason        TEXT,
    precise       BIGINT NOT NULL DEFAULT 0,
    -- once ready: Unix ms of its first frame, and its duration
    starts_at     BIGINT,
    duration_ms   BIGINT,
    created_at    BIGINT NOT NULL
);

CREATE INDEX clips_stream ON clips(stream_id);
CREATE INDEX clips_created ON clips(created_at);
