//! Admin API tokens: only their SHA-256 (`ids::sha256_hex`) is stored (a token is long and
//! random, so an unkeyed hash suffices); tokens from the configuration are compared the same
//! way.

use super::{ids, now_ms, Db, DbError};

impl Db {
    pub async fn admin_token_count(&self) -> Result<i64, DbError> {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admin_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.0)
    }

    /// Creates a token and returns it (shown once).
    pub async fn create_admin_token(&self) -> Result<String, DbError> {
        let token = ids::new_admin_token();
        sqlx::query("INSERT INTO admin_tokens (id, token_hash, created_at) VALUES ($1, $2, $3)")
            .bind(ids::new_recording_id())
            .bind(ids::sha256_hex(&token))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    pub async fn admin_token_hashes(&self) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM admin_tokens")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
