//! The server's side of one recording's demuxer process (`child`): starts it, writes the
//! recording's bytes to its stdin, reads its `StreamEvent`s from its stdout, and says how it
//! ended. Two threads per recording, as for the transcoding worker:
//! - the reader thread starts the process (so `PR_SET_PDEATHSIG` follows a thread that lives
//!   until the process is reaped), reads and checks its messages (`wire::read_to_worker`,
//!   bounded and fuzzed: the process has read hostile bytes, so its output is hostile too) and
//!   hands them to the connection through a queue of `EVENT_QUEUE` events and `EVENT_BYTES`
//!   bytes; when that is full it waits, the pipe fills and the demuxer stops reading. Then it reaps the process and sends `Ended`.
//! - the writer thread takes the recording's bytes from `INPUT_QUEUE` messages and writes them
//!   to stdin; when the demuxer is slow the pipe fills, the queue fills, and the connection
//!   stops reading its socket (back-pressure on the browser, whose page then lowers its
//!   bitrate). Closing the input (`finish_input`) closes stdin: the demuxer finishes.
//!
//! Memory one recording can make the server hold: `INPUT_QUEUE` messages of at most
//! `ws.max_message_bytes`, `EVENT_BYTES` of frames queued, and the one frame being read
//! (at most `wire::MAX_FRAME_DATA`).
//! Dropping a `Demux` kills its process.

use std::io::{self, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::child::{EXIT_UNREADABLE, EXIT_UNSUPPORTED};
use super::messages::Container;
use crate::media::queue::{self, Weighed};
use crate::media::StreamEvent;
use crate::transcode::worker::wire::{self, ToWorker};
use crate::transcode::worker::{child_command, WorkerLimits};

/// Recording messages waiting for the demuxer's stdin.
const INPUT_QUEUE: usize = 4;
/// Events waiting for the connection to hand them to the broadcast.
const EVENT_QUEUE: usize = 64;
/// Frame bytes waiting for the connection (one largest frame; a frame over it takes it all).
const EVENT_BYTES: usize = wire::MAX_FRAME_DATA;
/// A demuxer reads a container and keeps a few frames: far less than a ladder's address space.
const DEMUX_MEMORY_MB: u64 = 1024;

/// What the demuxer hands the connection.
#[derive(Debug)]
pub enum Output {
    Event(StreamEvent),
    /// The demuxer is done (nothing follows).
    Ended(Ended),
}

impl Weighed for Output {
    fn weight(&self) -> usize {
        match self {
            Output::Event(event) => event.weight(),
            Output::Ended(_) => 0,
        }
    }
}

/// How a demuxer ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// The recording ended (its input was closed) and everything in it was handed over.
    Finished,
    /// The recording's codecs are not ones Strata decodes.
    Unsupported,
    /// The recording cannot be read, or the demuxer failed (crashed, sent garbage).
    Failed(String),
}

/// One recording's demuxer.
pub struct Demux {
    input: Option<mpsc::Sender<Bytes>>,
    output: queue::Receiver<Output>,
    process: Arc<Mutex<Option<Child>>>,
}

impl Demux {
    /// Starts a demuxer for a recording in `container`.
    pub async fn start(
        container: Container,
        limits: WorkerLimits,
        playback_id: &str,
    ) -> io::Result<Self> {
        let limits = WorkerLimits {
            memory_mb: match limits.memory_mb {
                0 => DEMUX_MEMORY_MB,
                mb => mb.min(DEMUX_MEMORY_MB),
            },
            ..limits
        };
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (output_tx, output_rx) = queue::channel(EVENT_QUEUE, EVENT_BYTES);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let process = Arc::new(Mutex::new(None));
        let shared = process.clone();
        let args = ["demux", container.name(), playback_id].map(str::to_string);
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("strata-demux-out".into())
            .spawn(move || {
                let _entered = span.enter();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let pipes = child_command(limits, &args).spawn().and_then(|mut child| {
                    let pipes = (child.stdin.take(), child.stdout.take());
                    *lock(&shared) = Some(child);
                    match pipes {
                        (Some(stdin), Some(stdout)) => Ok((stdin, stdout)),
                        _ => Err(io::Error::other("the demuxer's pipes were not set up")),
                    }
                });
                match pipes {
                    Ok((stdin, stdout)) => {
                        let _ = started_tx.send(Ok(stdin));
                        let ended = read_output(stdout, &output_tx);
                        let ended = reap(&shared, ended);
                        let _ = output_tx.blocking_send(Output::Ended(ended));
                    }
                    Err(e) => {
                        kill(&shared);
                        let _ = started_tx.send(Err(e));
                    }
                }
            })?;
        let stdin = started_rx
            .await
            .map_err(|_| io::Error::other("the demuxer's thread ended"))??;
        std::thread::Builder::new()
            .name("strata-demux-in".into())
            .spawn(move || write_input(input_rx, stdin))?;
        Ok(Self {
            input: Some(input_tx),
            output: output_rx,
            process,
        })
    }

    /// Its input (`None` once closed) and its output, to wait on both at once.
    pub fn parts(&mut self) -> (Option<&mpsc::Sender<Bytes>>, &mut queue::Receiver<Output>) {
        (self.input.as_ref(), &mut self.output)
    }

    /// The recording is complete: the demuxer gets end-of-file once it has read what is queued.
    pub fn finish_input(&mut self) {
        self.input = None;
    }

    /// The demuxer's next output; `None` only after `Ended` was returned.
    pub async fn next(&mut self) -> Option<Output> {
        self.output.recv().await
    }
}

impl Drop for Demux {
    fn drop(&mut self) {
        kill(&self.process);
    }
}

fn lock(process: &Mutex<Option<Child>>) -> std::sync::MutexGuard<'_, Option<Child>> {
    process.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill(process: &Mutex<Option<Child>>) {
    if let Some(child) = lock(process).as_mut() {
        // a reaped child is not signalled again (std keeps its status)
        let _ = child.kill();
    }
}

fn write_input(mut input: mpsc::Receiver<Bytes>, mut stdin: ChildStdin) {
    while let Some(bytes) = input.blocking_recv() {
        if stdin.write_all(&bytes).is_err() {
            return; // the demuxer exited: its reader says why
        }
    }
    // dropping stdin closes it: the demuxer reads end-of-file
}

/// Reads events until the demuxer closes its output.
fn read_output(stdout: ChildStdout, output: &queue::Sender<Output>) -> Option<String> {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    loop {
        match wire::read_to_worker(&mut reader) {
            Ok(Some(ToWorker::Event(event))) => {
                if output.blocking_send(Output::Event(event)).is_err() {
                    return None; // the connection is gone; the process is killed with it
                }
            }
            Ok(Some(ToWorker::Job(_))) => return Some("sent a job".into()),
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// Waits for the process (killing it if its output was malformed) and says how it ended.
fn reap(process: &Mutex<Option<Child>>, malformed: Option<String>) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    if malformed.is_some() {
        kill(process);
    }
    let Some(mut child) = lock(process).take() else {
        return Ended::Failed("the demuxer was not started".into());
    };
    let status = child.wait();
    if let Some(e) = malformed {
        return Ended::Failed(format!("the demuxer sent a malformed message ({e})"));
    }
    match status {
        Ok(status) if status.success() => Ended::Finished,
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) if code == i32::from(EXIT_UNSUPPORTED) => Ended::Unsupported,
            (Some(code), _) if code == i32::from(EXIT_UNREADABLE) => {
                Ended::Failed("the recording cannot be read".into())
            }
            (Some(code), _) => Ended::Failed(format!("the demuxer exited with status {code}")),
            (_, Some(signal)) => {
                Ended::Failed(format!("the demuxer was killed by signal {signal}"))
            }
            _ => Ended::Failed(format!("the demuxer ended: {status}")),
        },
        Err(e) => Ended::Failed(format!("the demuxer could not be waited for: {e}")),
    }
}
