//! Devices: cameras that publish to a stream over RTP, controlled over the signaling socket
//! (`crate::devices`). Each belongs to one stream and has its own secret token, separate from
//! the stream key: stored only as a keyed hash (like stream keys), shown once when created or
//! rotated, revocable. Presence (`state`, `last_seen`, `node_id`) is written by the node its
//! signaling socket is connected to, so every node's API lists it.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{ids, now_ms, Db, DbError};

/// A device as the server stores it (the token exists only as a hash).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub stream_id: String,
    /// `offline`, `online` or `streaming` (see `crate::devices::Presence`).
    pub state: String,
    /// Unix milliseconds of the last message from the device; `None` if it never connected.
    pub last_seen: Option<i64>,
    /// The node its signaling socket is (or was last) connected to.
    pub node_id: Option<String>,
    pub created_at: i64,
}

impl Device {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            stream_id: row.try_get("stream_id")?,
            state: row.try_get("state")?,
            last_seen: row.try_get("last_seen")?,
            node_id: row.try_get("node_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const DEVICE_COLUMNS: &str = "id, name, stream_id, state, last_seen, node_id, created_at";

impl Db {
    /// Creates a device of `stream_id` named `name`; returns it with its token, which is never
    /// retrievable again.
    pub async fn create_device(
        &self,
        name: &str,
        stream_id: &str,
    ) -> Result<(Device, String), DbError> {
        if !ids::is_name(name) {
            return Err(DbError::BadDeviceName);
        }
        if self.stream_by_id(stream_id).await?.is_none() {
            return Err(DbError::NotFound);
        }
        if self.device_where("name", name).await?.is_some() {
            return Err(DbError::DeviceNameTaken(name.to_string()));
        }
        let token = ids::new_device_token();
        let device = Device {
            id: ids::new_device_id(),
            name: name.to_string(),
            stream_id: stream_id.to_string(),
            state: "offline".into(),
            last_seen: None,
            node_id: None,
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO devices (id, name, stream_id, token_hash, state, created_at) \
             VALUES ($1, $2, $3, $4, 'offline', $5)",
        )
        .bind(&device.id)
        .bind(&device.name)
        .bind(&device.stream_id)
        .bind(self.keys.hash(&token))
        .bind(device.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| name_taken(e, name))?;
        Ok((device, token))
    }

    pub async fn list_devices(&self) -> Result<Vec<Device>, DbError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(Device::from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn device_by_id(&self, id: &str) -> Result<Option<Device>, DbError> {
        self.device_where("id", id).await
    }

    /// The device with id or name `which` (the CLI takes either).
    pub async fn device_by_id_or_name(&self, which: &str) -> Result<Option<Device>, DbError> {
        match self.device_where("id", which).await? {
            Some(device) => Ok(Some(device)),
            None => self.device_where("name", which).await,
        }
    }

    /// The device a signaling socket's token opens, if any. Compares hashes, never tokens.
    pub async fn device_by_token(&self, token: &str) -> Result<Option<Device>, DbError> {
        self.device_where("token_hash", &self.keys.hash(token))
            .await
    }

    pub async fn rename_device(&self, id: &str, name: &str) -> Result<Option<Device>, DbError> {
        if !ids::is_name(name) {
            return Err(DbError::BadDeviceName);
        }
        if let Some(other) = self.device_where("name", name).await? {
            if other.id != id {
                return Err(DbError::DeviceNameTaken(name.to_string()));
            }
        }
        sqlx::query("UPDATE devices SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| name_taken(e, name))?;
        self.device_by_id(id).await
    }

    /// Deletes a device; false if there was none.
    pub async fn delete_device(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the device's token with a new one, returned once; the old one stops working.
    pub async fn rotate_device_token(&self, id: &str) -> Result<Option<String>, DbError> {
        let token = ids::new_device_token();
        let found = self
            .set_device_token_hash(id, &self.keys.hash(&token))
            .await?;
        Ok(found.then_some(token))
    }

    /// Revokes the device's token without a replacement (rotate to connect again).
    pub async fn revoke_device_token(&self, id: &str) -> Result<bool, DbError> {
        // never the shape of a hash, so no token matches it
        self.set_device_token_hash(id, &format!("revoked:{id}"))
            .await
    }

    async fn set_device_token_hash(&self, id: &str, hash: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE devices SET token_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records the device's presence, seen now from `node_id`; false if the device is gone
    /// (deleted while connected).
    pub async fn set_device_presence(
        &self,
        id: &str,
        state: &str,
        node_id: &str,
        last_seen: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE devices SET state = $1, node_id = $2, last_seen = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(node_id)
        .bind(last_seen)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records that the device left `node_id`, unless it has meanwhile connected to another
    /// node (whose presence stands); false if it was not this node's.
    pub async fn set_device_offline(
        &self,
        id: &str,
        node_id: &str,
        last_seen: i64,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE devices SET state = 'offline', last_seen = $1 WHERE id = $2 AND node_id = $3",
        )
        .bind(last_seen)
        .bind(id)
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks every device this node showed as connected offline: at startup, after a crash left
    /// them online.
    pub async fn reset_device_presence(&self, node_id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE devices SET state = 'offline' WHERE node_id = $1")
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn device_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<Device>, DbError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE {column} = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(Device::from_row).transpose()?)
    }
}

/// A write that broke the unique name is `DeviceNameTaken` (two creates at once: the check
/// before it passed for both).
fn name_taken(error: sqlx::Error, name: &str) -> DbError {
    match error.as_database_error() {
        Some(e) if e.is_unique_violation() => DbError::DeviceNameTaken(name.to_string()),
        _ => DbError::Sql(error),
    }
}

#[cfg(test)]
mod tests {
    use super::super::scratch;
    use super::*;

    #[tokio::test]
    async fn device_tokens_open_their_device_until_rotated_or_revoked() {
        let (_dir, db) = scratch().await;
        let (stream, key) = db.create_stream("cam", "default", false, 0).await.unwrap();
        let (device, token) = db.create_device("pi-1", &stream.id).await.unwrap();
        assert_eq!(device.state, "offline");
        assert_eq!(
            db.device_by_token(&token).await.unwrap(),
            Some(device.clone())
        );
        // the stream key is not a device token, and a token is not a stream key
        assert_eq!(db.device_by_token(&key).await.unwrap(), None);
        assert_eq!(db.stream_by_key(&token).await.unwrap(), None);
        assert!(matches!(
            db.create_device("pi-1", &stream.id).await,
            Err(DbError::DeviceNameTaken(_))
        ));
        assert!(matches!(
            db.create_device("pi 2", &stream.id).await,
            Err(DbError::BadDeviceName)
        ));
        assert!(matches!(
            db.create_device("pi-2", "str_missing").await,
            Err(DbError::NotFound)
        ));

        let rotated = db.rotate_device_token(&device.id).await.unwrap().unwrap();
        assert_eq!(db.device_by_token(&token).await.unwrap(), None);
        assert!(db.device_by_token(&rotated).await.unwrap().is_some());
        assert!(db.revoke_device_token(&device.id).await.unwrap());
        assert_eq!(db.device_by_token(&rotated).await.unwrap(), None);

        assert!(db
            .set_device_presence(&device.id, "online", "node-a", 42)
            .await
            .unwrap());
        let seen = db.device_by_id_or_name("pi-1").await.unwrap().unwrap();
        assert_eq!(
            (seen.state.as_str(), seen.last_seen, seen.node_id.as_deref()),
            ("online", Some(42), Some("node-a"))
        );
        db.reset_device_presence("node-a").await.unwrap();
        assert_eq!(
            db.device_by_id(&device.id).await.unwrap().unwrap().state,
            "offline"
        );

        let renamed = db.rename_device(&device.id, "pi-one").await.unwrap();
        assert_eq!(renamed.unwrap().name, "pi-one");
        // deleting the stream deletes its devices
        db.delete_stream(&stream.id).await.unwrap();
        assert!(db.list_devices().await.unwrap().is_empty());
    }
}
