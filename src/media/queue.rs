//! The queues a broadcast's media travels in, bounded in items *and* in the bytes they hold:
//! `StreamEvent`s from ingest to packaging or the transcoder, and packaged parts and segments
//! from packaging to publishing (any item that says what it weighs, `Weighed`).
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

/// What an item of a queue costs of its byte budget.
pub trait Weighed {
    fn weight(&self) -> usize;
}

impl Weighed for StreamEvent {
    fn weight(&self) -> usize {
        match self {
            StreamEvent::Frame(frame) => frame.data.len(),
            _ => 0,
        }
    }
}

/// A queue holding at most `events` items and `bytes` bytes of their data.
pub fn channel<T: Weighed>(events: usize, bytes: usize) -> (Sender<T>, Receiver<T>) {
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

pub struct Sender<T = StreamEvent> {
    tx: mpsc::Sender<(T, usize)>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            budget: self.budget.clone(),
            capacity: self.capacity,
        }
    }
}

impl<T: Weighed> Sender<T> {
    /// `send` for a thread outside the async runtime.
    pub fn blocking_send(&self, event: T) -> Result<(), Closed> {
        futures::executor::block_on(self.send(event))
    }

    /// Queues `event`, waiting while the queue is full in items or bytes.
    pub async fn send(&self, event: T) -> Result<(), Closed> {
        let cost = event.weight().min(self.capacity);
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

pub struct Receiver<T = StreamEvent> {
    rx: mpsc::Receiver<(T, usize)>,
    budget: Arc<Semaphore>,
}

impl<T> Receiver<T> {
    pub async fn recv(&mut self) -> Option<T> {
        let (event, cost) = self.rx.recv().await?;
        self.budget.add_permits(cost);
        Some(event)
    }

    /// `recv` for a thread outside the async runtime.
    pub fn blocking_recv(&mut self) -> Option<T> {
        let (event, cost) = self.rx.blocking_recv()?;
        self.budget.add_permits(cost);
        Some(event)
    }
}

impl<T> Drop for Receiver<T> {
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
