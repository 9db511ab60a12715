//! Stream claims: which node owns a stream's broadcast, across every node sharing the database.
//!
//! A node claims a stream before it accepts a publish (`claim_stream`), renews the claim every
//! `CLAIM_RENEW` while the broadcast runs, and releases it when the broadcast ends. A claim
//! that is not renewed expires after `CLAIM_TTL` (a crashed node), and then any node may take
//! it. Each step is one statement, atomic on SQLite and PostgreSQL alike, so two nodes that
//! claim at the same instant cannot both win. Within one node the hub decides between two
//! publishers of one stream (a takeover), so a node's claim is the node's, whatever session
//! holds it. Expiry is judged by the claiming node's clock: nodes are assumed to keep time
//! within a few seconds of each other (NTP).

use std::time::Duration;

use super::{now_ms, Db, DbError};

/// A claim not renewed for this long is free for another node.
pub const CLAIM_TTL: Duration = Duration::from_secs(15);
/// How often a running broadcast renews its claim.
pub const CLAIM_RENEW: Duration = Duration::from_secs(5);

impl Db {
    /// Claims `stream_id` for `session_id` on `node_id`: succeeds when the stream is unclaimed,
    /// its claim expired, or the claim is already this node's.
    pub async fn claim_stream(
        &self,
        stream_id: &str,
        node_id: &str,
        session_id: &str,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO stream_claims (stream_id, node_id, session_id, expires_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE SET node_id = excluded.node_id, \
             session_id = excluded.session_id, expires_at = excluded.expires_at \
             WHERE stream_claims.expires_at < $5 OR stream_claims.node_id = excluded.node_id",
        )
        .bind(stream_id)
        .bind(node_id)
        .bind(session_id)
        .bind(now + CLAIM_TTL.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Extends this node's claim on `stream_id`; false when the claim is no longer this
    /// node's (it expired and another node took it).
    pub async fn renew_claim(&self, stream_id: &str, node_id: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE stream_claims SET expires_at = $1 WHERE stream_id = $2 AND node_id = $3",
        )
        .bind(now_ms() + CLAIM_TTL.as_millis() as i64)
        .bind(stream_id)
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases the claim `session_id` holds on `stream_id` (nothing if a newer session of
    /// this node, or another node, holds it now).
    pub async fn release_claim(&self, stream_id: &str, session_id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM stream_claims WHERE stream_id = $1 AND session_id = $2")
            .bind(stream_id)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The node holding an unexpired claim on `stream_id`, if any.
    pub async fn claim_holder(&self, stream_id: &str) -> Result<Option<String>, DbError> {
        let node = sqlx::query_scalar(
            "SELECT node_id FROM stream_claims WHERE stream_id = $1 AND expires_at >= $2",
        )
        .bind(stream_id)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn one_node_holds_a_stream_until_it_releases_or_its_claim_expires() {
        let (_dir, db) = crate::db::scratch().await;
        assert!(db.claim_stream("s", "node-a", "one").await.unwrap());
        assert!(!db.claim_stream("s", "node-b", "two").await.unwrap());
        // the owning node may hand it to a newer session (a takeover)
        assert!(db.claim_stream("s", "node-a", "three").await.unwrap());
        assert!(db.renew_claim("s", "node-a").await.unwrap());
        assert!(!db.renew_claim("s", "node-b").await.unwrap());
        assert_eq!(
            db.claim_holder("s").await.unwrap().as_deref(),
            Some("node-a")
        );
        // an older session's release leaves the newer one's claim
        db.release_claim("s", "one").await.unwrap();
        assert!(!db.claim_stream("s", "node-b", "two").await.unwrap());
        db.release_claim("s", "three").await.unwrap();
        assert!(db.claim_stream("s", "node-b", "two").await.unwrap());
        // an expired claim is free for anyone
        sqlx::query("UPDATE stream_claims SET expires_at = 0")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(db.claim_holder("s").await.unwrap(), None);
        assert!(!db.renew_claim("s", "node-a").await.unwrap());
        assert!(db.claim_stream("s", "node-a", "four").await.unwrap());
    }
}
