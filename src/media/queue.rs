//! The queue a broadcast's `StreamEvent`s travel in from ingest to packaging or the
//! transcoder, bounded in events *and* in the bytes of the frames it holds.
//!
//! When either bound is reached the sender waits: the ingest connection stops reading its
//! socket and TCP pushes back on that one publisher, while other broadcasts go on. A frame
//! larger than the whole byte budget is charged as the whole budget, so it waits for an empty
//! queue instead of forever. When the receiver goes away, waiting and later sends fail at
//! once.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::StreamEvent;

/// The receiver is gone.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the broadcast stopped taking media")]
pub struct Closed;

/// A queue holding at most `events` events and `bytes` bytes of frame data.
pub fn channel(events: usize, bytes: usize) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::channel(events.max(1));
    let capacity = bytes.clamp(1, u32::MAX as usize);
    let budget = Arc::new(Semaphore::new(capacity));
    (
        Sender {
            tx,
            budget: budget.clone(),
            capacity,
        },
        Receiver { rx, budget },
    )
}

#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<(StreamEvent, usize)>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

impl Sender {
    /// Queues `event`, waiting while the queue is full in events or bytes.
    pub async fn send(&self, event: StreamEvent) -> Result<(), Closed> {
        let cost = match &event {
            StreamEvent::Frame(frame) => frame.data.len().min(self.capacity),
            _ => 0,
        };
        if cost > 0 {
            // `cost` ≤ `capacity` ≤ u32::MAX
            let permit = self
                .budget
                .acquire_many(cost as u32)
                .await
                .map_err(|_| Closed)?;
            permit.forget();
        }
        self.tx.send((event, cost)).await.map_err(|_| {
            self.budget.add_permits(cost);
            Closed
        })
    }
}

pub struct Receiver {
    rx: mpsc::Receiver<(StreamEvent, usize)>,
    budget: Arc<Semaphore>,
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        let (event, cost) = self.rx.recv().await?;
        self.budget.add_permits(cost);
        Some(event)
    }

    /// `recv` for a thread outside the async runtime.
    pub fn blocking_recv(&mut self) -> Option<StreamEvent> {
        let (event, cost) = self.rx.blocking_recv()?;
        self.budget.add_permits(cost);
        Some(event)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // a sender waiting for bytes that will never be returned fails instead
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::media::{MediaFrame, Timestamp, TrackKind};

    fn frame(bytes: usize) -> StreamEvent {
        StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Video,
            dts: Timestamp::from_millis(0),
            pts: Timestamp::from_millis(0),
            sync: true,
            segment_start: false,
            data: Bytes::from(vec![0u8; bytes]),
        })
    }

    #[tokio::test]
    async fn a_sender_waits_when_the_bytes_are_used_up() {
        let (tx, mut rx) = channel(100, 1_000);
        tx.send(frame(600)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(frame(600))).await;
        assert!(blocked.is_err(), "the second frame must wait for bytes");
        assert!(rx.recv().await.is_some());
        tokio::time::timeout(Duration::from_secs(5), tx.send(frame(600)))
            .await
            .expect("bytes came back")
            .unwrap();
        // events without frame data cost nothing
        tx.send(StreamEvent::End).await.unwrap();
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_waits_for_an_empty_queue() {
        let (tx, mut rx) = channel(100, 1_000);
        tx.send(frame(10)).await.unwrap();
        let sender = tx.clone();
        let big = tokio::spawn(async move { sender.send(frame(5_000)).await });
        assert!(rx.recv().await.is_some());
        big.await.unwrap().unwrap();
        match rx.recv().await {
            Some(StreamEvent::Frame(f)) => assert_eq!(f.data.len(), 5_000),
            _ => panic!("the large frame"),
        }
    }

    #[tokio::test]
    async fn senders_fail_when_the_receiver_is_gone() {
        let (tx, rx) = channel(100, 1_000);
        tx.send(frame(900)).await.unwrap();
        let sender = tx.clone();
        let waiting = tokio::spawn(async move { sender.send(frame(900)).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.unwrap(), Err(Closed));
        assert_eq!(tx.send(StreamEvent::End).await, Err(Closed));
    }
}
