//! Sessions (one per broadcast: its source, ladder, state and last segment) and recordings (the
//! VOD each session leaves). A session's id is its recording's id.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Db, DbError};

/// What a broadcast reports about its source once it is known.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct SourceInfo {
    /// e.g. `avc1.64001f`
    pub video_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    /// e.g. `mp4a.40.2`
    pub audio_codec: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub stream_id: String,
    /// `live`, `reconnecting` or `ended`.
    pub state: String,
    pub ladder: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    #[serde(flatten)]
    pub source: SourceInfo,
    /// Average input bit rate over the session (written when it ends).
    pub bitrate: Option<i64>,
    pub last_segment: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Recording {
    pub id: String,
    pub stream_id: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    /// Bytes of its segments (every rendition), once it ended.
    pub size_bytes: Option<i64>,
}

const SESSION_COLUMNS: &str = "id, stream_id, state, ladder, started_at, ended_at, video_codec, \
     width, height, fps, audio_codec, bitrate, last_segment";

fn session(row: &AnyRow) -> Result<Session, sqlx::Error> {
    let dimension = |column| -> Result<Option<u32>, sqlx::Error> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .map(|v| v.clamp(0, i64::from(u32::MAX)) as u32))
    };
    Ok(Session {
        id: row.try_get("id")?,
        stream_id: row.try_get("stream_id")?,
        state: row.try_get("state")?,
        ladder: row.try_get("ladder")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        source: SourceInfo {
            video_codec: row.try_get("video_codec")?,
            width: dimension("width")?,
            height: dimension("height")?,
            fps: row.try_get("fps")?,
            audio_codec: row.try_get("audio_codec")?,
        },
        bitrate: row.try_get("bitrate")?,
        last_segment: row.try_get("last_segment")?,
    })
}

impl Db {
    /// A broadcast of `stream_id` started on node `node_id`: its session (state `live`) and,
    /// if it is kept, its recording.
    pub async fn start_session(
        &self,
        id: &str,
        stream_id: &str,
        ladder: &str,
        record: bool,
        node_id: &str,
    ) -> Result<(), DbError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // the stream's row lock orders this against a delete of the stream (see
        // `Db::delete_stream`): either the delete sees this recording, or this finds no stream
        let locked = sqlx::query("UPDATE streams SET id = id WHERE id = $1")
            .bind(stream_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        sqlx::query(
            "INSERT INTO sessions (id, stream_id, state, ladder, started_at, node_id) \
             VALUES ($1, $2, 'live', $3, $4, $5)",
        )
        .bind(id)
        .bind(stream_id)
        .bind(ladder)
        .bind(now)
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
        if record {
            sqlx::query("INSERT INTO recordings (id, stream_id, started_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(stream_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_session_source(&self, id: &str, source: &SourceInfo) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE sessions SET video_codec = $1, width = $2, height = $3, fps = $4, \
             audio_codec = $5 WHERE id = $6",
        )
        .bind(source.video_codec.clone())
        .bind(source.width.map(i64::from))
        .bind(source.height.map(i64::from))
        .bind(source.fps)
        .bind(source.audio_codec.clone())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A live session's publisher was lost (`reconnecting`) or is back (`live`). An ended
    /// session stays ended.
    pub async fn set_session_state(&self, id: &str, state: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE sessions SET state = $1 WHERE id = $2 AND state <> 'ended'")
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The broadcast ended: the session is `ended` with its average input bit rate and last
    /// segment number, and its recording has a duration. Returns whether the recording exists
    /// (it does not when the broadcast did not record, or its stream was deleted meanwhile).
    pub async fn finish_session(
        &self,
        id: &str,
        duration_ms: i64,
        bitrate: Option<i64>,
        last_segment: Option<u64>,
        size_bytes: Option<i64>,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE sessions SET state = 'ended', ended_at = $1, bitrate = $2, \
             last_segment = $3 WHERE id = $4",
        )
        .bind(now)
        .bind(bitrate)
        .bind(last_segment.map(|n| n as i64))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let recording = sqlx::query(
            "UPDATE recordings SET ended_at = $1, duration_ms = $2, size_bytes = $3 \
                 WHERE id = $4",
        )
        .bind(now)
        .bind(duration_ms)
        .bind(size_bytes)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(recording.rows_affected() > 0)
    }

    /// Every session, newest first.
    pub async fn list_sessions(&self) -> Result<Vec<Session>, DbError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY started_at DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(session).collect::<Result<_, _>>()?)
    }

    /// Sessions a crashed process of node `node_id` left `live`: ended now (called at
    /// start-up). Other nodes' sessions are theirs.
    pub async fn end_orphaned_sessions(&self, node_id: &str) -> Result<u64, DbError> {
        let done = sqlx::query(
            "UPDATE sessions SET state = 'ended', ended_at = $1 \
             WHERE state <> 'ended' AND (node_id = $2 OR node_id = '')",
        )
        .bind(now_ms())
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Finished recordings, newest first (of one stream when `stream_id` is given).
    pub async fn list_recordings(
        &self,
        stream_id: Option<&str>,
    ) -> Result<Vec<Recording>, DbError> {
        // an empty filter matches every stream (ids are never empty)
        let rows = sqlx::query(
            "SELECT id, stream_id, started_at, ended_at, duration_ms, size_bytes FROM recordings \
             WHERE ended_at IS NOT NULL AND ($1 = '' OR stream_id = $1) \
             ORDER BY started_at DESC",
        )
        .bind(stream_id.unwrap_or_default())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(recording)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Recordings a crashed process of node `node_id` left unfinished: (session id, stream id)
    /// of each session it left live that records. Called at start-up, before
    /// `end_orphaned_sessions`.
    pub async fn orphaned_recordings(
        &self,
        node_id: &str,
    ) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query(
            "SELECT s.id, s.stream_id FROM sessions s JOIN recordings r ON r.id = s.id \
             WHERE s.state <> 'ended' AND (s.node_id = $1 OR s.node_id = '') \
             AND r.ended_at IS NULL",
        )
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("stream_id")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Recordings of deleted streams whose objects may remain: (id, deleted at, Unix ms).
    pub async fn deleted_recordings(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query("SELECT id, deleted_at FROM deleted_recordings ORDER BY deleted_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("deleted_at")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Forgets a deleted recording once none of its objects remain.
    pub async fn forget_deleted_recording(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM deleted_recordings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Recording `id`, once it ended.
    pub async fn ended_recording(&self, id: &str) -> Result<Option<Recording>, DbError> {
        let row = sqlx::query(
            "SELECT id, stream_id, started_at, ended_at, duration_ms, size_bytes FROM recordings \
             WHERE id = $1 AND ended_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(recording).transpose()?)
    }

    /// The stream of recording `id` (ended or still being made), if there is such a recording.
    pub async fn recording_stream(&self, id: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT stream_id FROM recordings WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("stream_id")).transpose()?)
    }

    /// Removes a recording's row (its objects are the caller's); false if there was none.
    pub async fn delete_recording(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn recording(row: &AnyRow) -> Result<Recording, sqlx::Error> {
    Ok(Recording {
        id: row.try_get("id")?,
        stream_id: row.try_get("stream_id")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        size_bytes: row.try_get("size_bytes")?,
    })
}
