//! Clips: rows of the clips a user cut (`crate::clips` makes them). A clip is `pending` until
//! its objects are stored, then `ready` (with its start and duration) or `failed` (with a
//! reason a user can act on).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Db, DbError};

/// A clip as the server stores it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Clip {
    pub id: String,
    /// The stream it was cut from.
    pub stream_id: String,
    /// The recording it was cut from, when it was cut from one.
    pub recording_id: Option<String>,
    /// `pending`, `ready` or `failed`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    pub precise: bool,
    /// Unix ms of its first frame, once ready.
    pub starts_at: Option<i64>,
    /// Once ready.
    pub duration_ms: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}

impl Clip {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            stream_id: row.try_get("stream_id")?,
            recording_id: row.try_get("recording_id")?,
            state: row.try_get("state")?,
            reason: row.try_get("reason")?,
            precise: row.try_get::<i64, _>("precise")? != 0,
            starts_at: row.try_get("starts_at")?,
            duration_ms: row.try_get("duration_ms")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const CLIP_COLUMNS: &str =
    "id, stream_id, recording_id, state, reason, precise, starts_at, duration_ms, created_at";

impl Db {
    /// Records a new, pending clip `id` of `stream_id` (from `recording_id` when given), made
    /// by node `node_id`.
    pub async fn create_clip(
        &self,
        id: &str,
        stream_id: &str,
        recording_id: Option<&str>,
        precise: bool,
        node_id: &str,
    ) -> Result<Clip, DbError> {
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO clips (id, stream_id, recording_id, state, precise, node_id, created_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6)",
        )
        .bind(id)
        .bind(stream_id)
        .bind(recording_id)
        .bind(i64::from(precise))
        .bind(node_id)
        .bind(created_at)
        .execute(&self.pool)
        .await?;
        self.clip(id).await?.ok_or(DbError::NotFound)
    }

    pub async fn clip(&self, id: &str) -> Result<Option<Clip>, DbError> {
        let sql = format!("SELECT {CLIP_COLUMNS} FROM clips WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Clip::from_row).transpose()?)
    }

    /// Every clip (of `stream_id`, when given), newest first.
    pub async fn list_clips(&self, stream_id: Option<&str>) -> Result<Vec<Clip>, DbError> {
        // an empty filter matches every stream (ids are never empty)
        let sql = format!(
            "SELECT {CLIP_COLUMNS} FROM clips WHERE ($1 = '' OR stream_id = $1) \
             ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream_id.unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Clip::from_row).collect::<Result<_, _>>()?)
    }

    /// A pending clip is ready: it starts at `starts_at` (Unix ms) and lasts `duration_ms`.
    pub async fn clip_ready(
        &self,
        id: &str,
        starts_at: i64,
        duration_ms: i64,
    ) -> Result<Option<Clip>, DbError> {
        sqlx::query(
            "UPDATE clips SET state = 'ready', starts_at = $1, duration_ms = $2 \
             WHERE id = $3 AND state = 'pending'",
        )
        .bind(starts_at)
        .bind(duration_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.clip(id).await
    }

    /// A pending clip could not be made, for `reason`.
    pub async fn clip_failed(&self, id: &str, reason: &str) -> Result<Option<Clip>, DbError> {
        sqlx::query(
            "UPDATE clips SET state = 'failed', reason = $1 WHERE id = $2 AND state = 'pending'",
        )
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.clip(id).await
    }

    /// Fails the clips node `node_id` left pending (it restarted while making them); returns
    /// their ids, whose objects the caller removes.
    pub async fn fail_pending_clips(&self, node_id: &str) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT id FROM clips WHERE state = 'pending' AND node_id = $1")
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        for id in &ids {
            self.clip_failed(id, "the node making it restarted; cut it again")
                .await?;
        }
        Ok(ids)
    }

    /// Forgets clip `id`; false when there was none.
    pub async fn delete_clip(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM clips WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Ready or failed clips created before `before` (Unix ms), oldest first: past retention.
    pub async fn clips_created_before(&self, before: i64) -> Result<Vec<Clip>, DbError> {
        let sql = format!(
            "SELECT {CLIP_COLUMNS} FROM clips WHERE created_at < $1 AND state <> 'pending' \
             ORDER BY created_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(Clip::from_row).collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::db::scratch as db;

    #[tokio::test]
    async fn a_clip_goes_from_pending_to_ready_or_failed_once() {
        let (_dir, db) = db().await;
        let clip = db
            .create_clip("cccccccccccccccc", "str_x", None, false, "n1")
            .await
            .unwrap();
        assert_eq!((clip.state.as_str(), clip.duration_ms), ("pending", None));
        let ready = db
            .clip_ready(&clip.id, 1_000, 10_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (ready.state.as_str(), ready.duration_ms),
            ("ready", Some(10_000))
        );
        // a finished clip stays as it is
        let still = db.clip_failed(&clip.id, "late").await.unwrap().unwrap();
        assert_eq!((still.state.as_str(), still.reason), ("ready", None));
        let other = db
            .create_clip(
                "dddddddddddddddd",
                "str_y",
                Some("rrrrrrrrrrrrrrrr"),
                true,
                "n2",
            )
            .await
            .unwrap();
        // only the restarted node's pending clips fail
        assert!(db.fail_pending_clips("n1").await.unwrap().is_empty());
        assert_eq!(
            db.fail_pending_clips("n2").await.unwrap(),
            vec![other.id.clone()]
        );
        let failed = db.clip(&other.id).await.unwrap().unwrap();
        assert_eq!(failed.state, "failed");
        let failed = db.clip_failed(&other.id, "gone").await.unwrap().unwrap();
        assert_eq!(
            failed.reason.as_deref(),
            Some("the node making it restarted; cut it again")
        );
        assert_eq!(db.list_clips(Some("str_y")).await.unwrap(), vec![failed]);
        assert_eq!(db.list_clips(None).await.unwrap().len(), 2);
        assert_eq!(
            db.clips_created_before(crate::db::now_ms() + 1)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(db.delete_clip(&clip.id).await.unwrap());
        assert!(!db.delete_clip(&clip.id).await.unwrap());
        assert_eq!(db.clip(&clip.id).await.unwrap(), None);
    }
}
