//! The worker process (`strata worker`): reads a job and `StreamEvent`s from stdin, runs the
//! transcoder (`transcode::spawn`, unchanged) on them, and writes its `RenditionEvent`s, the
//! rungs' speeds and dropped-frame counts to stdout. Logs go to stderr, which is the server's.
//!
//! Queues inside the worker: stdin → the transcoder through a `media::queue` of
//! `LOCAL_QUEUE` events and `LOCAL_QUEUE_BYTES` bytes (when full, the stdin thread waits, the
//! pipe fills and the server's writer waits: back-pressure on the publisher, as in-process);
//! the transcoder → stdout through `OUTPUT_QUEUE` events (when full, the transcoder's threads
//! wait for the pipe to the server).
//!
//! Speeds: the rungs report into a `LiveStats` of the worker's own; every `STATS_EVERY` the
//! changed ones are sent. Dropped frames: the transcoder counts them through the `metrics`
//! facade, so the worker installs a recorder that keeps those counts and sends them the same
//! way (every other metric of the worker is dropped; the server has its own).
//!
//! Exit status: 0 after the transcoder's `End` was written; 1 when stdout failed (the server
//! is gone); 3 when the server's input was malformed; 4 when the transcoder ended without an
//! `End` (a thread panicked).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::wire::{self, FromWorker, Job, ToWorker};
use crate::db::Stream;
use crate::hub::LiveStats;
use crate::media::{queue, RenditionEvent, StreamEvent};
use crate::transcode::{self, TranscodeJob, OUTPUT_QUEUE};

/// Events between the stdin thread and the transcoder.
const LOCAL_QUEUE: usize = 64;
/// Frame bytes between the stdin thread and the transcoder (two of the largest frames).
const LOCAL_QUEUE_BYTES: usize = 2 * wire::MAX_FRAME_DATA;
/// How often changed speeds and new dropped-frame counts are sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Runs the worker on this process's stdin and stdout.
pub fn main() -> ExitCode {
    // `Stdin` keeps what it buffered past the job for the stdin thread
    let job = match wire::read_to_worker(&mut std::io::stdin().lock()) {
        Ok(Some(ToWorker::Job(job))) => job,
        Ok(Some(ToWorker::Event(_))) => return refuse("the first message was not the job"),
        Ok(None) => return refuse("the input ended before the job"),
        Err(e) => return refuse(&e.to_string()),
    };
    let span = tracing::info_span!("worker", playback_id = %job.playback_id);
    let _entered = span.enter();
    if let Err(e) = transcode::init() {
        tracing::error!(error = %e, "the transcoding worker cannot start FFmpeg");
        return ExitCode::from(4);
    }
    let dropped = Arc::new(Mutex::new(BTreeMap::new()));
    // only fails when a recorder is set already, which nothing in this process does
    let _ = metrics::set_global_recorder(DropCounter {
        counts: dropped.clone(),
    });
    let stats = Arc::new(LiveStats::new("worker".into(), &stream_of(&job)));
    let (tx, rx) = queue::channel(LOCAL_QUEUE, LOCAL_QUEUE_BYTES);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let transcoder = transcode::spawn(
        TranscodeJob {
            ladder: job.ladder,
            segment_duration: job.segment_duration,
            stats: stats.clone(),
        },
        rx,
        out_tx,
    );
    let transcoder = match transcoder {
        Ok(thread) => thread,
        Err(e) => {
            tracing::error!(error = %e, "the transcoding worker cannot start its threads");
            return ExitCode::from(4);
        }
    };
    let reader_span = span.clone();
    let reader = std::thread::Builder::new()
        .name("strata-worker-in".into())
        .spawn(move || {
            let _entered = reader_span.enter();
            read_input(std::io::stdin().lock(), tx)
        });
    let reader = match reader {
        Ok(thread) => thread,
        Err(e) => {
            tracing::error!(error = %e, "the transcoding worker cannot start its threads");
            return ExitCode::from(4);
        }
    };
    let code = write_output(out_rx, &stats, &dropped);
    let _ = transcoder.join();
    // The stdin thread is not waited for: after an early end (the transcoder refused the
    // source) it may wait on a silent publisher's next event; the exit ends it.
    drop(reader);
    if code == 0 && MALFORMED_INPUT.load(Ordering::Relaxed) {
        return ExitCode::from(3);
    }
    ExitCode::from(code)
}

fn refuse(why: &str) -> ExitCode {
    tracing::error!("the transcoding worker got no valid job: {why}");
    ExitCode::from(3)
}

/// The statistics' owner as `LiveStats` wants it; only the playback id matters here (it
/// labels the transcoder's metrics, which this process does not export).
fn stream_of(job: &Job) -> Stream {
    Stream {
        id: String::new(),
        name: String::new(),
        playback_id: job.playback_id.clone(),
        ladder: job.ladder.name.clone(),
        record: false,
        dvr_window: 0,
        next_segment: 0,
        created_at: 0,
        updated_at: 0,
    }
}

/// Set when the server's input was malformed (the transcoder is ended all the same).
static MALFORMED_INPUT: AtomicBool = AtomicBool::new(false);

/// Feeds stdin to the transcoder until `End`.
fn read_input(mut stdin: impl std::io::Read, tx: queue::Sender) {
    let end = |malformed: bool| {
        MALFORMED_INPUT.store(malformed, Ordering::Relaxed);
        let _ = futures::executor::block_on(tx.send(StreamEvent::End));
    };
    loop {
        let event = match wire::read_to_worker(&mut stdin) {
            Ok(Some(ToWorker::Event(event))) => event,
            Ok(Some(ToWorker::Job(_))) => {
                tracing::error!("the server sent a second job; ending the transcoder");
                return end(true);
            }
            // the server closed the pipe without an end: end what is there
            Ok(None) => return end(false),
            Err(e) => {
                tracing::error!(error = %e, "malformed input from the server; ending the transcoder");
                return end(true);
            }
        };
        let last = matches!(event, StreamEvent::End);
        if futures::executor::block_on(tx.send(event)).is_err() || last {
            return;
        }
    }
}

/// Writes the transcoder's output to stdout until its `End`.
fn write_output(
    mut output: mpsc::Receiver<RenditionEvent>,
    stats: &LiveStats,
    dropped: &Mutex<BTreeMap<String, u64>>,
) -> u8 {
    let mut stdout = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut sent_speeds: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_stats = Instant::now();
    let send = |stdout: &mut BufWriter<_>, message: &FromWorker| -> Result<(), u8> {
        match wire::encode_from_worker(message) {
            Ok(bytes) => stdout.write_all(&bytes).map_err(|_| 1),
            Err(e) => {
                // the transcoder made something the protocol cannot carry: skip it, loudly
                tracing::error!(error = %e, "the transcoding worker skipped an output it cannot send");
                Ok(())
            }
        }
    };
    let mut stats_round = |stdout: &mut BufWriter<_>| -> Result<(), u8> {
        for (rendition, speed) in stats.speeds() {
            if sent_speeds.get(&rendition) != Some(&speed) {
                sent_speeds.insert(rendition.clone(), speed);
                send(stdout, &FromWorker::Speed { rendition, speed })?;
            }
        }
        let counts = std::mem::take(&mut *dropped.lock().unwrap_or_else(|p| p.into_inner()));
        for (rendition, frames) in counts {
            send(stdout, &FromWorker::Dropped { rendition, frames })?;
        }
        Ok(())
    };
    let result = (|| {
        loop {
            let event = match output.try_recv() {
                Ok(event) => event,
                Err(mpsc::error::TryRecvError::Empty) => {
                    stdout.flush().map_err(|_| 1)?;
                    match output.blocking_recv() {
                        Some(event) => event,
                        None => return Err(4),
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(4),
            };
            if last_stats.elapsed() >= STATS_EVERY {
                last_stats = Instant::now();
                stats_round(&mut stdout)?;
            }
            let end = matches!(event, RenditionEvent::End);
            if end {
                // the last speeds and drops before the end
                stats_round(&mut stdout)?;
            }
            send(&mut stdout, &FromWorker::Event(event))?;
            if end {
                stdout.flush().map_err(|_| 1)?;
                return Ok(());
            }
        }
    })();
    match result {
        Ok(()) => 0,
        Err(code) => {
            if code == 4 {
                tracing::error!("the transcoder stopped without ending its output");
            }
            code
        }
    }
}

/// The worker's metrics recorder: keeps the transcoder's dropped-frame counts per rendition
/// for `write_output`; every other metric is a no-op.
struct DropCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

struct RenditionDrops {
    rendition: String,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl metrics::CounterFn for RenditionDrops {
    fn increment(&self, value: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(self.rendition.clone()).or_default() += value;
    }

    fn absolute(&self, _value: u64) {}
}

impl metrics::Recorder for DropCounter {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() != crate::telemetry::TRANSCODE_DROPPED {
            return metrics::Counter::noop();
        }
        let rendition = key
            .labels()
            .find(|l| l.key() == "rendition")
            .map(|l| l.value().to_string())
            .unwrap_or_default();
        metrics::Counter::from_arc(Arc::new(RenditionDrops {
            rendition,
            counts: self.counts.clone(),
        }))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}
