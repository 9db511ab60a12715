//! Segment numbers, reserved in the database before any object carrying one is written.
//!
//! Segments are cached as immutable for a year, so a number must never name two different
//! objects: not after a takeover (the old broadcast's final flush and the new broadcast
//! overlap), not after a crash (objects written, progress not yet recorded), not after a
//! database error. A broadcast therefore reserves a block of `BLOCK` numbers in one atomic
//! update at its start and extends it ahead of use, only while nobody reserved after it. A
//! segment whose number is not reserved is not written: it waits in the publisher's backlog
//! (and is given up, counted, if the database stays away). Unused numbers of a block are
//! skipped by the next broadcast; numbers are cheap, reuse is not.

use crate::db::{Db, DbError};

/// Numbers reserved at a time.
pub const BLOCK: u64 = 16;
/// A reservation is extended when fewer than this many numbers are left.
pub const LOW_WATER: u64 = 8;

/// One broadcast's reservation: the numbers in `first..end` are its own.
pub struct SegmentNumbers {
    db: Db,
    stream_id: String,
    end: u64,
}

impl SegmentNumbers {
    /// Reserves the first block for a broadcast of `stream_id`; returns the reservation and
    /// its first number.
    pub async fn reserve(db: Db, stream_id: &str) -> Result<(Self, u64), DbError> {
        let first = db.reserve_segments(stream_id, BLOCK).await?;
        let numbers = Self {
            db,
            stream_id: stream_id.to_string(),
            end: first + BLOCK,
        };
        Ok((numbers, first))
    }

    /// The first number not reserved.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Makes sure the numbers below `needed` are reserved, extending the reservation early
    /// (when fewer than `LOW_WATER` are left); returns the end of what is reserved, which may
    /// be less than `needed` when the database is unavailable or another broadcast reserved
    /// after this one.
    pub async fn cover(&mut self, needed: u64) -> u64 {
        if self.end >= needed + LOW_WATER {
            return self.end;
        }
        let new_end = needed.max(self.end) + BLOCK;
        match self
            .db
            .extend_segments(&self.stream_id, self.end, new_end)
            .await
        {
            Ok(true) => self.end = new_end,
            Ok(false) => {
                tracing::warn!(
                    reserved_until = self.end,
                    "segment numbers were reserved by a newer broadcast of this stream; this one \
                     cannot publish past them"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, reserved_until = self.end, "could not reserve more segment numbers; retried with the next segment");
            }
        }
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_grow_ahead_and_never_overlap() {
        let (_dir, db) = crate::db::scratch().await;
        let (stream, _) = db.create_stream("s", "default", true, 0).await.unwrap();
        let (mut old, first) = SegmentNumbers::reserve(db.clone(), &stream.id)
            .await
            .unwrap();
        assert_eq!((first, old.end()), (0, BLOCK));
        assert_eq!(old.cover(1).await, BLOCK, "plenty left: no database write");
        let grown = old.cover(BLOCK - LOW_WATER + 1).await;
        assert_eq!(grown, 2 * BLOCK, "extended by a block from its end");
        // a takeover: the new broadcast starts after everything the old one reserved …
        let (_new, next_first) = SegmentNumbers::reserve(db.clone(), &stream.id)
            .await
            .unwrap();
        assert_eq!(next_first, grown);
        // … and the old one's final flush cannot reserve into the new one's numbers
        assert_eq!(old.cover(grown).await, grown);
    }
}
