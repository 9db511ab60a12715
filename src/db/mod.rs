//! The database: sqlx's `Any` driver over `migrations/` (SQLite by default; PostgreSQL when
//! several nodes share state). Repositories are plain async functions over the pool.

pub mod admin;
pub mod claims;
pub mod clips;
pub mod devices;
pub mod ids;
pub mod sessions;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stream named `{0}` already exists")]
    NameTaken(String),
    #[error("a stream name {}", ids::NAME_RULE)]
    BadName,
    #[error("no such stream")]
    NotFound,
    #[error("a device named `{0}` already exists")]
    DeviceNameTaken(String),
    #[error("a device name {}", ids::NAME_RULE)]
    BadDeviceName,
    #[error("a DVR window is 0 (off) to {MAX_DVR_WINDOW_SECS} seconds")]
    BadDvrWindow,
}

/// A new stream's DVR window: two hours of a live broadcast can be rewound.
pub const DEFAULT_DVR_WINDOW_SECS: u32 = 7200;
/// The longest DVR window: six hours. A broadcast's timelines hold every segment anyway (its
/// recording lists them all); what grows with the window is the DVR view, rewritten with every
/// segment (about 150 bytes a segment a rendition: ≈ 1.6 MB a rendition at six hours of 2 s
/// segments) and read by every viewer who rewinds.
pub const MAX_DVR_WINDOW_SECS: u32 = 21_600;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    keys: ids::KeyHasher,
}

/// A stream as the server sees it (the key exists only as a hash).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Stream {
    pub id: String,
    pub name: String,
    pub playback_id: String,
    /// Name of the ladder its broadcasts use.
    pub ladder: String,
    /// Whether its broadcasts are kept as VOD recordings.
    pub record: bool,
    /// How far back (seconds) viewers may rewind its live broadcasts; 0: no DVR.
    pub dvr_window: u32,
    /// The next segment number its broadcasts will use.
    pub next_segment: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds (0 if never updated).
    pub updated_at: i64,
}

impl Stream {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            playback_id: row.try_get("playback_id")?,
            ladder: row.try_get("ladder")?,
            record: row.try_get::<i64, _>("record")? != 0,
            dvr_window: row
                .try_get::<i64, _>("dvr_window")?
                .clamp(0, i64::from(MAX_DVR_WINDOW_SECS)) as u32,
            next_segment: row.try_get::<i64, _>("next_segment")?.max(0) as u64,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

const STREAM_COLUMNS: &str =
    "id, name, playback_id, ladder, record, dvr_window, next_segment, created_at, updated_at";

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Db {
    /// Connects, creating the SQLite file if needed, and runs pending migrations. `keys` hashes
    /// stream keys (keyed with the server secret).
    pub async fn connect(url: &str, keys: ids::KeyHasher) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p))
        {
            if let Some(parent) = std::path::Path::new(path).parent() {
                // Best effort: a failure surfaces as a clear connect error just below.
                let _ = std::fs::create_dir_all(parent);
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await?;
        if url.starts_with("sqlite:") {
            // WAL lets the CLI add a stream while the server runs.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, keys })
    }

    /// Creates a stream that uses `ladder` (the caller checked it exists), keeps recordings
    /// if `record` and lets viewers rewind `dvr_window` seconds; returns it with its key, which
    /// is never retrievable again.
    pub async fn create_stream(
        &self,
        name: &str,
        ladder: &str,
        record: bool,
        dvr_window: u32,
    ) -> Result<(Stream, String), DbError> {
        if !ids::is_name(name) {
            return Err(DbError::BadName);
        }
        if dvr_window > MAX_DVR_WINDOW_SECS {
            return Err(DbError::BadDvrWindow);
        }
        if self.stream_by_name(name).await?.is_some() {
            return Err(DbError::NameTaken(name.to_string()));
        }
        let key = ids::new_stream_key();
        let stream = Stream {
            id: ids::new_stream_id(),
            name: name.to_string(),
            playback_id: ids::new_playback_id(),
            ladder: ladder.to_string(),
            record,
            dvr_window,
            next_segment: 0,
            created_at: now_ms(),
            updated_at: 0,
        };
        sqlx::query(
            "INSERT INTO streams (id, name, playback_id, key_hash, ladder, record, dvr_window, \
             next_segment, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
        )
        .bind(&stream.id)
        .bind(&stream.name)
        .bind(&stream.playback_id)
        .bind(self.keys.hash(&key))
        .bind(&stream.ladder)
        .bind(i64::from(stream.record))
        .bind(i64::from(stream.dvr_window))
        .bind(stream.created_at)
        .execute(&self.pool)
        .await?;
        Ok((stream, key))
    }

    pub async fn list_streams(&self) -> Result<Vec<Stream>, DbError> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM streams ORDER BY created_at, name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(Stream::from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn stream_by_name(&self, name: &str) -> Result<Option<Stream>, DbError> {
        self.stream_where("name", name).await
    }

    /// The stream a publisher's key opens, if any. Compares hashes, never keys. A key stored
    /// with the unkeyed hash of earlier versions is accepted and re-stored keyed.
    pub async fn stream_by_key(&self, key: &str) -> Result<Option<Stream>, DbError> {
        let keyed = self.keys.hash(key);
        if let Some(stream) = self.stream_where("key_hash", &keyed).await? {
            return Ok(Some(stream));
        }
        let legacy = ids::sha256_hex(key);
        let Some(stream) = self.stream_where("key_hash", &legacy).await? else {
            return Ok(None);
        };
        sqlx::query("UPDATE streams SET key_hash = $1 WHERE id = $2 AND key_hash = $3")
            .bind(&keyed)
            .bind(&stream.id)
            .bind(&legacy)
            .execute(&self.pool)
            .await?;
        Ok(Some(stream))
    }

    pub async fn stream_by_id(&self, id: &str) -> Result<Option<Stream>, DbError> {
        self.stream_where("id", id).await
    }

    pub async fn stream_by_playback_id(&self, id: &str) -> Result<Option<Stream>, DbError> {
        self.stream_where("playback_id", id).await
    }

    /// Renames a stream and/or changes its ladder (the caller checked it exists), whether it
    /// records and its DVR window; what is `None` stays.
    pub async fn update_stream(
        &self,
        id: &str,
        name: Option<&str>,
        ladder: Option<&str>,
        record: Option<bool>,
        dvr_window: Option<u32>,
    ) -> Result<Option<Stream>, DbError> {
        if dvr_window.is_some_and(|w| w > MAX_DVR_WINDOW_SECS) {
            return Err(DbError::BadDvrWindow);
        }
        let Some(current) = self.stream_by_id(id).await? else {
            return Ok(None);
        };
        let name = name.unwrap_or(&current.name);
        if !ids::is_name(name) {
            return Err(DbError::BadName);
        }
        if name != current.name && self.stream_by_name(name).await?.is_some() {
            return Err(DbError::NameTaken(name.to_string()));
        }
        sqlx::query(
            "UPDATE streams SET name = $1, ladder = $2, record = $3, dvr_window = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(name)
        .bind(ladder.unwrap_or(&current.ladder))
        .bind(i64::from(record.unwrap_or(current.record)))
        .bind(i64::from(dvr_window.unwrap_or(current.dvr_window)))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.stream_by_id(id).await
    }

    /// Deletes a stream with its sessions and recording rows; returns the ids of its
    /// recordings, or `None` if there was no such stream. Each recording is remembered in
    /// `deleted_recordings` until its objects are gone (see `publish::sweep`).
    pub async fn delete_stream(&self, id: &str) -> Result<Option<Vec<String>>, DbError> {
        let mut tx = self.pool.begin().await?;
        // lock the stream's row first: a broadcast starting now (`start_session` takes the same
        // lock) either committed its recording before, and it is remembered below, or finds
        // the stream gone
        sqlx::query("UPDATE streams SET id = id WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let recordings: Vec<String> = sqlx::query("SELECT id FROM recordings WHERE stream_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, sqlx::Error>>()?;
        sqlx::query(
            "INSERT INTO deleted_recordings (id, deleted_at) \
             SELECT id, $2 FROM recordings WHERE stream_id = $1 \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for table in ["sessions", "recordings", "devices"] {
            let sql = format!("DELETE FROM {table} WHERE stream_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM streams WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(recordings))
    }

    /// Replaces the stream's key with a new one, returned once; the old key stops working.
    pub async fn rotate_key(&self, id: &str) -> Result<Option<String>, DbError> {
        let key = ids::new_stream_key();
        let found = self.set_key_hash(id, &self.keys.hash(&key)).await?;
        Ok(found.then_some(key))
    }

    /// Revokes the stream's key without a replacement (rotate to publish again).
    pub async fn revoke_key(&self, id: &str) -> Result<bool, DbError> {
        // never the shape of a hash, so no key matches it
        self.set_key_hash(id, &format!("revoked:{id}")).await
    }

    /// Stores the stream's key hash; false if there is no such stream.
    async fn set_key_hash(&self, id: &str, hash: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE streams SET key_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The stream whose unique `column` equals `value`.
    async fn stream_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<Stream>, DbError> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM streams WHERE {column} = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Stream::from_row).transpose()?)
    }

    /// Reserves `count` segment numbers of `stream_id` in one atomic update; returns the first.
    /// No other reservation, on this node or another, can get any of them.
    pub async fn reserve_segments(&self, stream_id: &str, count: u64) -> Result<u64, DbError> {
        let end: i64 = sqlx::query_scalar(
            "UPDATE streams SET next_segment = next_segment + $1 WHERE id = $2 \
             RETURNING next_segment",
        )
        .bind(count as i64)
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::NotFound)?;
        Ok((end.max(0) as u64).saturating_sub(count))
    }

    /// Extends a reservation that ends at `end` to `new_end`, only if nobody reserved numbers
    /// after it meanwhile; whether it did.
    pub async fn extend_segments(
        &self,
        stream_id: &str,
        end: u64,
        new_end: u64,
    ) -> Result<bool, DbError> {
        let done =
            sqlx::query("UPDATE streams SET next_segment = $1 WHERE id = $2 AND next_segment = $3")
                .bind(new_end as i64)
                .bind(stream_id)
                .bind(end as i64)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A scratch SQLite database in a temporary directory (kept while the directory lives).
#[cfg(test)]
pub(crate) async fn scratch() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let db = Db::connect(&url, ids::KeyHasher::new(b"test secret"))
        .await
        .unwrap();
    (dir, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::scratch as db;

    #[tokio::test]
    async fn keys_open_their_stream_and_nothing_else() {
        let (_dir, db) = db().await;
        let (stream, key) = db
            .create_stream("demo", "default", true, DEFAULT_DVR_WINDOW_SECS)
            .await
            .unwrap();
        assert_eq!(db.stream_by_key(&key).await.unwrap(), Some(stream.clone()));
        assert_eq!(db.stream_by_key("sk_wrong").await.unwrap(), None);
        assert!(matches!(
            db.create_stream("demo", "default", true, DEFAULT_DVR_WINDOW_SECS)
                .await,
            Err(DbError::NameTaken(_))
        ));
        assert!(matches!(
            db.create_stream("../x", "default", true, DEFAULT_DVR_WINDOW_SECS)
                .await,
            Err(DbError::BadName)
        ));
        assert_eq!(db.list_streams().await.unwrap(), vec![stream]);
    }

    #[tokio::test]
    async fn a_dvr_window_is_kept_and_bounded() {
        let (_dir, db) = db().await;
        let (stream, _) = db.create_stream("s", "default", true, 300).await.unwrap();
        assert_eq!(stream.dvr_window, 300);
        let too_long = MAX_DVR_WINDOW_SECS + 1;
        assert!(matches!(
            db.create_stream("t", "default", true, too_long).await,
            Err(DbError::BadDvrWindow)
        ));
        assert!(matches!(
            db.update_stream(&stream.id, None, None, None, Some(too_long))
                .await,
            Err(DbError::BadDvrWindow)
        ));
        let off = db
            .update_stream(&stream.id, None, None, None, Some(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((off.dvr_window, off.record), (0, true));
        let renamed = db
            .update_stream(&stream.id, Some("u"), None, None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.dvr_window, 0);
    }

    #[tokio::test]
    async fn segment_numbers_are_reserved_once() {
        let (_dir, db) = db().await;
        let (stream, _) = db
            .create_stream("s", "default", true, DEFAULT_DVR_WINDOW_SECS)
            .await
            .unwrap();
        assert_eq!(db.reserve_segments(&stream.id, 16).await.unwrap(), 0);
        assert_eq!(db.reserve_segments(&stream.id, 16).await.unwrap(), 16);
        // the first reservation cannot grow past the second
        assert!(!db.extend_segments(&stream.id, 16, 32).await.unwrap());
        assert!(db.extend_segments(&stream.id, 32, 48).await.unwrap());
        assert_eq!(db.reserve_segments(&stream.id, 1).await.unwrap(), 48);
        assert!(matches!(
            db.reserve_segments("missing", 1).await,
            Err(DbError::NotFound)
        ));
    }
}
