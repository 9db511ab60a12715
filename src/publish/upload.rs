//! Object writes under a live budget. A live segment is useful for about one segment duration:
//! object_store's own retries (minutes by default; configured short in `store`) would hold the
//! whole broadcast behind one slow request. Each write here retries with a short backoff until
//! its deadline and then gives up with the last error; the publisher decides what waits for the
//! next round. Retries and failures are counted in `strata_store_retries_total` and
//! `strata_store_write_failures_total`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Every write gets at least this long for its first attempt, even past its deadline.
const FIRST_ATTEMPT: Duration = Duration::from_millis(250);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("storing {path}: gave up after {attempts} attempt(s) within the live budget: {last}")]
pub struct UploadError {
    pub path: String,
    pub attempts: u32,
    pub last: String,
}

/// Writes to one store, each write bounded by a deadline.
#[derive(Clone)]
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    budget: Duration,
}

impl Uploader {
    pub fn new(store: Arc<dyn ObjectStore>, budget: Duration) -> Self {
        Self { store, budget }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The deadline of a write that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.budget
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    pub async fn put(
        &self,
        path: &Path,
        bytes: Bytes,
        deadline: Instant,
    ) -> Result<(), UploadError> {
        self.retrying(path, deadline, || async {
            self.store
                .put(path, PutPayload::from_bytes(bytes.clone()))
                .await
                .map(|_| ())
        })
        .await
    }

    /// A server-side copy (a hard link on local disk).
    pub async fn copy(&self, from: &Path, to: &Path, deadline: Instant) -> Result<(), UploadError> {
        self.retrying(to, deadline, || self.store.copy(from, to))
            .await
    }

    async fn retrying<F, Fut>(
        &self,
        path: &Path,
        deadline: Instant,
        op: F,
    ) -> Result<(), UploadError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), object_store::Error>>,
    {
        let mut attempts = 0u32;
        let mut backoff = FIRST_BACKOFF;
        let last = loop {
            attempts += 1;
            let until = deadline.max(
                Instant::now()
                    + if attempts == 1 {
                        FIRST_ATTEMPT
                    } else {
                        Duration::ZERO
                    },
            );
            let error = match tokio::time::timeout_at(until.into(), op()).await {
                Ok(Ok(())) => {
                    if attempts > 1 {
                        metrics::counter!("strata_store_retries_total")
                            .increment(u64::from(attempts - 1));
                    }
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer in time".to_string(),
            };
            let now = Instant::now();
            if now + backoff >= deadline {
                break error;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        metrics::counter!("strata_store_write_failures_total").increment(1);
        Err(UploadError {
            path: path.to_string(),
            attempts,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::throttle::{ThrottleConfig, ThrottledStore};

    #[tokio::test]
    async fn a_write_that_works_is_stored() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let up = Uploader::new(store.clone(), Duration::from_secs(1));
        up.put(
            &Path::from("a/1.m4s"),
            Bytes::from_static(b"x"),
            up.deadline(),
        )
        .await
        .unwrap();
        assert!(store.head(&Path::from("a/1.m4s")).await.is_ok());
    }

    #[tokio::test]
    async fn a_store_slower_than_the_budget_gives_up_near_the_deadline() {
        let slow = ThrottledStore::new(
            InMemory::new(),
            ThrottleConfig {
                wait_put_per_call: Duration::from_secs(5),
                ..Default::default()
            },
        );
        let up = Uploader::new(Arc::new(slow), Duration::from_millis(400));
        let started = Instant::now();
        let err = up
            .put(
                &Path::from("a/1.m4s"),
                Bytes::from_static(b"x"),
                up.deadline(),
            )
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(err.path, "a/1.m4s");
        assert!(err.last.contains("no answer"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_copy_is_retried_until_the_deadline() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let up = Uploader::new(store, Duration::from_millis(300));
        // copying a missing object fails every time
        let err = up
            .copy(&Path::from("missing"), &Path::from("b"), up.deadline())
            .await
            .unwrap_err();
        assert!(err.attempts >= 2, "{err}");
    }
}
