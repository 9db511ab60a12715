//! Transcoding in a child process per broadcast: a ladder's decoding of untrusted video runs in
//! `strata worker` (see `child`), so a decoder crash or a runaway allocation ends that one
//! broadcast, never the server. Passthrough stays in the server (nothing is decoded).
//!
//! `WorkerLimits::spawn` has the shape of `transcode::spawn`: it starts the worker (the
//! server's own binary, `/proc/self/exe`, so a binary replaced on disk by an upgrade never
//! speaks to a server of another build; `argv[0]` is `current_exe()` and the playback id
//! follows `worker` so `ps` says which broadcast a worker serves) with stdin and stdout piped
//! and stderr inherited (its log lines are the server's). Three parts per broadcast:
//! - a writer thread sends the job, then every `StreamEvent` from the ingest queue to the
//!   worker's stdin, blocking: a slow worker fills the pipe, the writer waits, the bounded
//!   ingest queue fills and ingest stops reading that publisher's socket, as in-process.
//! - the supervisor thread (which started the worker, see below) reads the worker's stdout:
//!   `wire` decodes it and `check` checks it against the ladder, then rendition events go to
//!   packaging (`blocking_send` into the `OUTPUT_QUEUE` channel; when it is full the thread
//!   waits and the worker's pipe fills), speeds go into the broadcast's `LiveStats` as
//!   `rung.rs` reports them in-process, dropped-frame counts into
//!   `strata_transcode_dropped_frames_total`.
//! - a task on the runtime kills the worker when packaging stops taking media (the broadcast
//!   ended: stopped, key revoked, claim lost) before the worker ended by itself.
//!
//! Limits, set in the child between fork and exec: `RLIMIT_AS` of
//! `transcode.worker_memory_mb` (0: none) so a runaway allocation fails inside the worker;
//! `RLIMIT_CORE` 0 (a crash writes no core file of someone's video); `MALLOC_ARENA_MAX=2` in
//! its environment, since glibc's per-thread arenas reserve 64 MiB of address space each and a
//! ladder has dozens of encoder threads. The default limit, 4 GiB, is measured: eight 720p
//! x264 `medium` rungs on 2 cores (tests/transcode_ladder.rs's overloaded ladder) peak at
//! 3.2 GiB of address space with 1.6 GiB resident, and 3 GiB ended that broadcast. Address
//! space grows with the cores too (x264 starts 1.5 threads per core per rung, 8 MiB of stack
//! each), so a many-core machine with a big ladder needs a higher limit (or 0); `PR_SET_PDEATHSIG`
//! `SIGKILL`, so a server that dies leaves no workers (the signal follows the *thread* that
//! started the worker, so the supervisor thread, which lives until the worker is reaped,
//! starts it). CPU: no `RLIMIT_CPU`, which counts CPU seconds over the process's life and so
//! would kill every long broadcast at some hour; instead the worker runs
//! `transcode.worker_nice` levels (default 5) below the server, so on a saturated machine
//! ingest, packaging and the origin get the CPU first and a ladder falls behind, where the
//! transcoder already drops frames on the slow rungs (segment starts are kept). A hard CPU
//! share per broadcast is the operator's cgroup (systemd `CPUQuota=`) to set.
//!
//! Failure: a worker killed by a signal, exiting non-zero, sending a message that is malformed
//! or not this ladder's, or closing its output before its `End` ends its broadcast: one error
//! line in the broadcast's span (so with its playback id) saying what happened and that other
//! broadcasts are unaffected, `strata_transcode_worker_failures_total{reason}` (`signal`,
//! `exit`, `protocol`, and `spawn` when it cannot start), then `RenditionEvent::End` to
//! packaging, which publishes what it has and ends the broadcast (restarting the worker would
//! resume at a keyframe with a timeline gap and could crash again on the same input; ending is
//! what a publisher sees and can act on). Packaging then drops its input; the writer's next
//! write fails and drops the ingest queue, so the publisher's connection closes. A worker that
//! sent `End` and exits 0 is a normal end and counts nothing. The worker is always reaped.
//!
//! Memory a hostile worker can make the server hold: `OUTPUT_QUEUE` events of at most
//! `wire::MAX_FRAME_DATA` bytes each, until the segmenter's `limits.held_media_bytes` budget
//! ends the broadcast.

pub(crate) mod check;
mod child;
pub mod one_shot;
pub mod wire;

use std::io::{self, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::check::{Accepted, OutputCheck};
use self::wire::{Job, ToWorker, WireError};
use super::TranscodeJob;
use crate::media::{queue, RenditionEvent, StreamEvent};
use crate::telemetry;

pub use self::check::MIN_POSTER_GAP;
pub use self::child::main as child_main;

/// How long a worker may take to exit after it closed its output (it sent `End`, or crashed)
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// glibc malloc arenas in a worker (see `start`), unless the environment sets
/// `MALLOC_ARENA_MAX`.
const MALLOC_ARENAS: &str = "2";
/// Bytes read from the worker's stdout at a time.
const READ_BUFFER: usize = 1 << 16;

/// The resource limits of every worker (`transcode.worker_memory_mb`, `transcode.worker_nice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// The worker's address-space limit in MiB; 0: none.
    pub memory_mb: u64,
    /// How many nice levels below the server the worker runs (0–19).
    pub nice: i32,
    /// CPU seconds the process may use in its life (`RLIMIT_CPU`); 0: none. Only for one-shot
    /// jobs (a broadcast's worker runs for hours).
    pub cpu_secs: u64,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self {
            memory_mb: 4096,
            nice: 5,
            cpu_secs: 0,
        }
    }
}

/// Why a worker failed (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Signal,
    Exit,
    Protocol,
    Spawn,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Signal => "signal",
            Reason::Exit => "exit",
            Reason::Protocol => "protocol",
            Reason::Spawn => "spawn",
        }
    }
}

fn count_failure(reason: Reason) {
    metrics::counter!(telemetry::TRANSCODE_WORKER_FAILURES, "reason" => reason.label())
        .increment(1);
}

impl WorkerLimits {
    /// Starts `job` in a worker process; it reads `input` and writes `output` until the
    /// broadcast ends, like `transcode::spawn`. An error means no worker runs (counted as
    /// `spawn` and logged; `input` is dropped, so the publisher's connection closes).
    pub fn spawn(
        &self,
        job: TranscodeJob,
        input: queue::Receiver,
        output: mpsc::Sender<RenditionEvent>,
    ) -> io::Result<JoinHandle<()>> {
        let limits = *self;
        let runtime = tokio::runtime::Handle::try_current().ok();
        let span = tracing::Span::current();
        let (started, outcome) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("strata-worker".into())
            .spawn(move || {
                let _entered = span.enter();
                let worker = match start(limits, &job) {
                    Ok(worker) => worker,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                let _ = started.send(Ok(()));
                supervise(worker, job, input, output, runtime, span.clone());
            })
            .inspect_err(spawn_failed)?;
        match outcome.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => {
                spawn_failed(&e);
                Err(e)
            }
            Err(_) => {
                let e = io::Error::other("the worker's supervisor thread ended");
                spawn_failed(&e);
                Err(e)
            }
        }
    }
}

fn spawn_failed(e: &io::Error) {
    count_failure(Reason::Spawn);
    tracing::error!(
        reason = Reason::Spawn.label(),
        "cannot start the transcoding worker of this broadcast: {e}; refusing this broadcast, \
         other broadcasts are unaffected"
    );
}

/// A started worker and the first bytes it gets.
struct Started {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    job: Vec<u8>,
}

fn start(limits: WorkerLimits, job: &TranscodeJob) -> io::Result<Started> {
    let playback_id = &job.stats.id.playback_id;
    let first = wire::encode_to_worker(&ToWorker::Job(Job {
        playback_id: playback_id.clone(),
        segment_duration: job.segment_duration,
        ladder: job.ladder.clone(),
    }))
    .map_err(io::Error::other)?;
    let mut command = child_command(limits, &["worker", playback_id]);
    let mut child = command.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("the worker's pipes were not set up"));
    };
    Ok(Started {
        child,
        stdin,
        stdout,
        job: first,
    })
}

/// A process of this binary (`/proc/self/exe`, see the module doc) with `args`, its stdin and
/// stdout piped, stderr the server's, and the worker's limits applied between fork and exec.
/// Also used for the demuxer of a browser's recording (`ingest::ws`).
pub(crate) fn child_command(limits: WorkerLimits, args: &[&str]) -> Command {
    let shown = std::env::current_exe().unwrap_or_else(|_| "strata".into());
    let server = std::process::id() as libc::pid_t;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(shown)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // glibc reserves 64 MiB of address space per malloc arena, up to 8 per core, and every
        // encoder thread may get one: that reservation alone would use up `RLIMIT_AS`
        command.env("MALLOC_ARENA_MAX", MALLOC_ARENAS);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (setrlimit, prctl, getppid, nice); it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || confine(limits, server));
    }
    command
}

/// In the forked child: the worker's limits (see the module doc).
fn confine(limits: WorkerLimits, server: libc::pid_t) -> io::Result<()> {
    let set = |resource, value: libc::rlim_t| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct it is given and nothing else.
        match unsafe { libc::setrlimit(resource, &limit) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    };
    if limits.memory_mb > 0 {
        set(
            libc::RLIMIT_AS,
            limits.memory_mb.saturating_mul(1 << 20) as libc::rlim_t,
        )?;
    }
    set(libc::RLIMIT_CORE, 0)?;
    if limits.cpu_secs > 0 {
        set(libc::RLIMIT_CPU, limits.cpu_secs as libc::rlim_t)?;
    }
    // SAFETY: plain system calls on this process.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // the server died before the death signal was armed: it will never come
        if libc::getppid() != server {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if limits.nice > 0 {
            // best effort: a priority that cannot be lowered is no reason to refuse a broadcast
            let _ = libc::nice(limits.nice);
        }
    }
    Ok(())
}

/// Why the server killed its worker (then its exit is not the worker's failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Killed {
    /// Packaging stopped taking media: the broadcast ended on the server's side.
    BroadcastEnded,
    /// It sent something malformed (reported when it was read).
    Protocol,
    /// It closed its output but did not exit within `EXIT_GRACE`.
    Hung,
}

/// The worker process, shared by the supervisor and the task that kills it when packaging
/// stops.
struct Process {
    child: Child,
    /// The worker's `End` reached packaging: from here on its exit is a normal one.
    ended: bool,
    killed: Option<Killed>,
}

impl Process {
    fn kill(&mut self, why: Killed) {
        if self.killed.is_none() {
            self.killed = Some(why);
        }
        // a reaped child is not signalled again (std keeps its status)
        let _ = self.child.kill();
    }
}

fn lock(process: &Mutex<Process>) -> std::sync::MutexGuard<'_, Process> {
    process.lock().unwrap_or_else(|p| p.into_inner())
}

fn supervise(
    worker: Started,
    job: TranscodeJob,
    input: queue::Receiver,
    output: mpsc::Sender<RenditionEvent>,
    runtime: Option<tokio::runtime::Handle>,
    span: tracing::Span,
) {
    let Started {
        child,
        stdin,
        stdout,
        job: first,
    } = worker;
    let process = Arc::new(Mutex::new(Process {
        child,
        ended: false,
        killed: None,
    }));
    let writer_span = span.clone();
    let writer = std::thread::Builder::new()
        .name("strata-worker-in".into())
        .spawn(move || {
            let _entered = writer_span.enter();
            write_input(first, input, stdin)
        });
    if let Err(e) = writer {
        tracing::error!(error = %e, "cannot start the worker's writer thread; ending this broadcast");
        lock(&process).kill(Killed::BroadcastEnded);
    }
    let done = CancellationToken::new();
    if let Some(runtime) = runtime {
        let (process, output, done) = (process.clone(), output.clone(), done.clone());
        runtime.spawn(async move {
            tokio::select! {
                _ = output.closed() => {
                    let mut process = lock(&process);
                    if !process.ended {
                        process.kill(Killed::BroadcastEnded);
                    }
                }
                _ = done.cancelled() => {}
            }
        });
    }
    let outcome = read_output(stdout, &job, &output, &process);
    let status = reap(&process);
    done.cancel();
    let (ended, killed) = {
        let process = lock(&process);
        (process.ended, process.killed)
    };
    let failure = match (&outcome, killed, status) {
        (_, Some(Killed::BroadcastEnded), _) => {
            tracing::info!("the broadcast ended; its transcoding worker was stopped");
            None
        }
        (Outcome::Malformed(e), _, _) => Some((
            Reason::Protocol,
            format!(
                "the transcoding worker of this broadcast sent a malformed message ({e}); \
                 killed it; ending this broadcast, other broadcasts are unaffected"
            ),
        )),
        (_, _, Err(e)) => Some((
            Reason::Exit,
            format!(
                "the transcoding worker of this broadcast could not be waited for ({e}); \
                 ending this broadcast, other broadcasts are unaffected"
            ),
        )),
        (_, Some(Killed::Hung), Ok(_)) => Some((
            Reason::Protocol,
            format!(
                "the transcoding worker of this broadcast closed its output but did not exit \
                 within {} s; killed it{}",
                EXIT_GRACE.as_secs(),
                if ended {
                    ""
                } else {
                    "; ending this broadcast, other broadcasts are unaffected"
                }
            ),
        )),
        (_, _, Ok(status)) => exit_failure(status, ended),
    };
    if let Some((reason, line)) = failure {
        count_failure(reason);
        tracing::error!(reason = reason.label(), "{line}");
    }
    if !ended {
        // packaging publishes what it has and ends the broadcast
        let _ = output.blocking_send(RenditionEvent::End);
    }
}

/// What the worker's exit says, when nothing else went wrong first.
fn exit_failure(status: ExitStatus, ended: bool) -> Option<(Reason, String)> {
    use std::os::unix::process::ExitStatusExt;
    let after = if ended {
        " after this broadcast ended; other broadcasts are unaffected"
    } else {
        "; ending this broadcast, other broadcasts are unaffected"
    };
    if let Some(signal) = status.signal() {
        let name = signal_name(signal);
        return Some((
            Reason::Signal,
            format!("the transcoding worker of this broadcast was killed by {name}{after}"),
        ));
    }
    match status.code() {
        Some(0) if ended => None,
        Some(0) => Some((
            Reason::Protocol,
            "the transcoding worker of this broadcast closed its output without ending it; \
             ending this broadcast, other broadcasts are unaffected"
                .into(),
        )),
        Some(code) => Some((
            Reason::Exit,
            format!("the transcoding worker of this broadcast exited with status {code}{after}"),
        )),
        None => Some((
            Reason::Exit,
            format!("the transcoding worker of this broadcast stopped ({status}){after}"),
        )),
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.into()
}

/// Sends the job, then every ingest event, to the worker's stdin, until `End` (or until the
/// worker stops reading: it died or was killed).
fn write_input(first: Vec<u8>, mut input: queue::Receiver, mut stdin: ChildStdin) {
    if stdin.write_all(&first).is_err() {
        return;
    }
    loop {
        let event = input.blocking_recv().unwrap_or(StreamEvent::End);
        let end = matches!(event, StreamEvent::End);
        let bytes = match wire::encode_to_worker(&ToWorker::Event(event)) {
            Ok(bytes) => bytes,
            Err(e) => {
                // e.g. a frame beyond `wire::MAX_FRAME_DATA`: the worker could not take it
                tracing::error!(error = %e, "a media event cannot be sent to the transcoding worker; ending this broadcast");
                let _ = stdin.write_all(&end_message());
                return;
            }
        };
        if stdin.write_all(&bytes).is_err() || end {
            // dropping `input` here closes the ingest queue: the publisher's next send fails
            return;
        }
    }
}

fn end_message() -> Vec<u8> {
    wire::encode_to_worker(&ToWorker::Event(StreamEvent::End)).unwrap_or_default()
}

/// How reading the worker's output ended.
enum Outcome {
    /// Its `End` was read and passed on.
    Ended,
    /// Its output closed (it exited or died) before an `End`.
    Closed,
    /// It sent something malformed; it has been killed.
    Malformed(WireError),
    /// Packaging stopped taking media; the worker has been killed.
    PackagingGone,
}

fn read_output(
    stdout: ChildStdout,
    job: &TranscodeJob,
    output: &mpsc::Sender<RenditionEvent>,
    process: &Mutex<Process>,
) -> Outcome {
    let mut stdout = BufReader::with_capacity(READ_BUFFER, stdout);
    let mut check = OutputCheck::new(&job.ladder);
    let playback_id = &job.stats.id.playback_id;
    let outcome = loop {
        let message = match wire::read_from_worker(&mut stdout) {
            Ok(Some(message)) => message,
            Ok(None) => break Outcome::Closed,
            Err(e) => break Outcome::Malformed(e),
        };
        let event = match check.check(message, Instant::now()) {
            Ok(Accepted::Forward(event)) => event,
            Ok(Accepted::Speed(rendition, speed)) => {
                job.stats.set_speed(&rendition, speed);
                continue;
            }
            Ok(Accepted::Dropped(rendition, frames)) => {
                metrics::counter!(
                    telemetry::TRANSCODE_DROPPED,
                    "stream" => playback_id.clone(),
                    "rendition" => rendition
                )
                .increment(frames);
                continue;
            }
            Ok(Accepted::Skip) => continue,
            Err(e) => break Outcome::Malformed(e),
        };
        let end = matches!(event, RenditionEvent::End);
        if end {
            lock(process).ended = true;
        }
        if output.blocking_send(event).is_err() {
            break Outcome::PackagingGone;
        }
        if end {
            break Outcome::Ended;
        }
    };
    match &outcome {
        Outcome::Malformed(_) => lock(process).kill(Killed::Protocol),
        Outcome::PackagingGone => {
            let mut process = lock(process);
            if !process.ended {
                process.kill(Killed::BroadcastEnded);
            }
        }
        Outcome::Ended | Outcome::Closed => {}
    }
    outcome
}

/// Waits for the worker to exit, killing it once `EXIT_GRACE` has passed.
fn reap(process: &Mutex<Process>) -> io::Result<ExitStatus> {
    let deadline = Instant::now() + EXIT_GRACE;
    loop {
        {
            let mut process = lock(process);
            if let Some(status) = process.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline && process.killed.is_none() {
                process.kill(Killed::Hung);
            }
        }
        // the worker has closed its output (or was killed): its exit is a moment away
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exits_are_told_apart() {
        let status = |raw| ExitStatus::from_raw(raw);
        // killed by signal 9
        let (reason, line) = exit_failure(status(9), false).unwrap();
        assert_eq!(reason, Reason::Signal);
        assert_eq!(
            line,
            "the transcoding worker of this broadcast was killed by SIGKILL; ending this \
             broadcast, other broadcasts are unaffected"
        );
        assert_eq!(exit_failure(status(6), false).unwrap().0, Reason::Signal);
        // exit status 3
        let (reason, line) = exit_failure(status(3 << 8), false).unwrap();
        assert_eq!(reason, Reason::Exit);
        assert!(line.contains("exited with status 3"), "{line}");
        // exit 0 after End is normal; before it, the worker broke the protocol
        assert!(exit_failure(status(0), true).is_none());
        assert_eq!(exit_failure(status(0), false).unwrap().0, Reason::Protocol);
    }
}
