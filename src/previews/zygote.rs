//! The previews zygote: one long-lived `strata previews-zygote` process per node that forks a
//! fresh child for every sheet, so a sheet costs a `fork`, not a start of the whole binary.
//!
//! Why: starting `strata` loads about 140 shared libraries (FFmpeg's, and what they link) and
//! resolves some 25,000 symbols, tens of milliseconds of CPU. Live previews make one sheet per
//! broadcast every few segments, so with 50 passthrough broadcasts those starts were about a
//! quarter of the server's CPU. A forked child has all of that done already.
//!
//! Isolation stays what a one-shot process gives: every sheet is decoded in a child of its own,
//! under the worker's limits (the zygote's address-space limit and nice level, which a fork
//! inherits, and a CPU-time limit the child sets on itself), killed after `SHEET_WALL_TIME`
//! or when it writes more than a sheet. The zygote itself never decodes anything: it reads a
//! job, forks, collects what the child wrote and its exit status, and answers. It is
//! single-threaded, so forking it is safe.
//!
//! Protocol, one job at a time on the zygote's stdin and stdout: a job is a big-endian u32
//! length and that many bytes (what a one-shot `strata previews` reads on its stdin); the
//! answer is the child's exit status (u32; [`KILLED`] when it was killed or died of a signal),
//! a u32 length and that many bytes (what it wrote, at most `MAX_SHEET_BYTES + 16`).
//!
//! Server side ([`run`]): the zygote is started on first use and makes one sheet at a time
//! (a few tens of milliseconds each). A job that waited [`WAIT_FOR_ZYGOTE`] for it, or finds
//! it cannot be started, runs in a one-shot process instead, as before (so a slow sheet of one
//! broadcast holds up another's by that much at most). A zygote that fails in any way
//! (a broken pipe, a malformed answer, no answer within the wall time and a margin) is killed
//! and started again on the next job.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, ChildStdin, ChildStdout, ExitCode};
use std::sync::{mpsc as std_mpsc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::{MAX_SHEET_BYTES, MAX_SHEET_INPUT_BYTES, SHEET_CPU_SECS, SHEET_WALL_TIME};
use crate::transcode::worker::{child_command, WorkerLimits};

/// The exit status reported for a child that was killed or died of a signal.
pub const KILLED: u32 = 255;
/// The largest job the zygote reads: a sheet's keyframes and their framing.
const MAX_JOB: usize = MAX_SHEET_INPUT_BYTES + (1 << 20);
/// The largest answer taken from a child.
const MAX_OUTPUT: usize = MAX_SHEET_BYTES + 16;
/// How long a child that closed its output may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long the server waits for an answer beyond the child's own wall time.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);
/// How long a job waits for the jobs before it to be done with the zygote; past it, the job
/// runs one-shot (a sheet of hostile bytes that takes its whole wall time holds the zygote up
/// that long, not every other broadcast's previews).
const WAIT_FOR_ZYGOTE: Duration = Duration::from_secs(5);
/// After the zygote could not be started, jobs run one-shot for this long before it is tried
/// again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("it did not answer within {0:?}")]
    NoAnswer(Duration),
    #[error("its answer is malformed")]
    Malformed,
}

// ---- the zygote process ----

/// Runs the zygote on this process's stdin and stdout until stdin closes.
pub fn main() -> ExitCode {
    if let Err(e) = crate::transcode::init() {
        tracing::error!(error = %e, "the previews zygote cannot start FFmpeg");
        return ExitCode::from(4);
    }
    let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut output = std::io::stdout().lock();
    loop {
        let job = match read_frame(&mut input, MAX_JOB) {
            Ok(Some(job)) => job,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the previews zygote got a malformed job");
                return ExitCode::from(3);
            }
        };
        let (status, answer) = match fork_sheet(&job) {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "the previews zygote cannot fork");
                return ExitCode::FAILURE;
            }
        };
        let written = output
            .write_all(&status.to_be_bytes())
            .and_then(|()| output.write_all(&(answer.len() as u32).to_be_bytes()))
            .and_then(|()| output.write_all(&answer))
            .and_then(|()| output.flush());
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// A u32-length-prefixed frame of at most `max` bytes; `None` at a clean end of input.
fn read_frame(input: &mut impl Read, max: usize) -> Result<Option<Vec<u8>>, ZygoteError> {
    let mut length = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut length[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ZygoteError::Malformed),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ZygoteError::Io("reading", e)),
        }
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > max {
        return Err(ZygoteError::Malformed);
    }
    let mut frame = vec![0u8; length];
    input
        .read_exact(&mut frame)
        .map_err(|e| ZygoteError::Io("reading", e))?;
    Ok(Some(frame))
}

/// Forks a child that makes the sheet of `job`; returns its exit status and what it wrote.
fn fork_sheet(job: &[u8]) -> Result<(u32, Vec<u8>), ZygoteError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ZygoteError::Io("pipe", std::io::Error::last_os_error()));
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: getpid has no preconditions.
    let zygote = unsafe { libc::getpid() };
    // SAFETY: the zygote is single-threaded (it starts no thread, and FFmpeg's are started
    // only by decoders, which only children open), so the child may use anything the parent
    // could; it leaves through `_exit`, never returning into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: both descriptors were just made and are closed once.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        return Err(ZygoteError::Io("fork", e));
    }
    if pid == 0 {
        // in the child: it never returns into the zygote's code
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sheet_in_child(job, zygote, read_end, write_end)
        }))
        .unwrap_or(4);
        // SAFETY: ends the child at once, without the zygote's exit handlers.
        unsafe { libc::_exit(i32::from(status)) }
    }
    // SAFETY: the write end is the child's now; the read end becomes a File owned here.
    let mut from_child = unsafe {
        libc::close(write_end);
        File::from_raw_fd(read_end)
    };
    let collected = collect(&mut from_child, SHEET_WALL_TIME);
    if collected.is_err() {
        // SAFETY: pid is this process's child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = reap(pid)?;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u32
    } else {
        KILLED
    };
    match collected {
        Ok(answer) if code != KILLED => Ok((code, answer)),
        Ok(_) => Ok((KILLED, Vec::new())),
        Err(why) => {
            tracing::warn!(why, "a previews child was killed");
            Ok((KILLED, Vec::new()))
        }
    }
}

/// Waits for child `pid` to end (it closed its output: it is about to); one that lingers past
/// `EXIT_GRACE` is killed. Returns its wait status.
fn reap(pid: libc::pid_t) -> Result<libc::c_int, ZygoteError> {
    let deadline = Instant::now() + EXIT_GRACE;
    let mut status: libc::c_int = 0;
    loop {
        let flags = if Instant::now() < deadline {
            libc::WNOHANG
        } else {
            // SAFETY: pid is this process's child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            0
        };
        // SAFETY: waits for (and reaps) our own child.
        match unsafe { libc::waitpid(pid, &mut status, flags) } {
            0 => std::thread::sleep(Duration::from_millis(1)),
            p if p > 0 => return Ok(status),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(ZygoteError::Io("waitpid", e));
                }
            }
        }
    }
}

/// In a forked child: confines it, makes the sheet of `job` and writes it to `write_end`;
/// returns the exit status.
fn sheet_in_child(
    job: &[u8],
    zygote: libc::pid_t,
    read_end: libc::c_int,
    write_end: libc::c_int,
) -> u8 {
    // SAFETY: plain system calls on this process's own descriptors and limits.
    let confined = unsafe {
        libc::close(read_end);
        // the zygote's stdin and stdout are the server's protocol pipes: the child reads
        // nothing of other jobs and cannot write into an answer (a library that prints gets
        // /dev/null)
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let detached = null >= 0 && libc::dup2(null, 0) == 0 && libc::dup2(null, 1) == 1;
        if null > 2 {
            libc::close(null);
        }
        let limit = libc::rlimit {
            rlim_cur: SHEET_CPU_SECS as libc::rlim_t,
            rlim_max: SHEET_CPU_SECS as libc::rlim_t,
        };
        detached
            && libc::setrlimit(libc::RLIMIT_CPU, &limit) == 0
            // a fork does not inherit the zygote's death signal: the child dies with it too
            && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == 0
            // the zygote died before the signal was armed: it will never come
            && libc::getppid() == zygote
    };
    if !confined {
        return 4;
    }
    // SAFETY: the write end was made by this process and is owned by this File alone.
    let mut out = std::io::BufWriter::new(unsafe { File::from_raw_fd(write_end) });
    let status = super::child::make_sheet(&mut &job[..], &mut out);
    // what make_sheet wrote is flushed; a failed flush is its status 1 already
    let _ = out.flush();
    status
}

/// Reads everything from `from` until it closes, within `wall_time` and `MAX_OUTPUT` bytes.
fn collect(from: &mut File, wall_time: Duration) -> Result<Vec<u8>, &'static str> {
    let deadline = Instant::now() + wall_time;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("it took too long");
        }
        if !readable_within(from.as_raw_fd(), left) {
            continue;
        }
        match from.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) => {
                if answer.len() + n > MAX_OUTPUT {
                    return Err("it wrote more than a sheet");
                }
                answer.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err("its output failed"),
        }
    }
}

/// Whether `fd` becomes readable (or closed) within `timeout`.
fn readable_within(fd: libc::c_int, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: poll reads and writes the one pollfd it is given.
    unsafe { libc::poll(&mut poll, 1, millis) > 0 }
}

// ---- the server's side ----

/// The node's zygote, started on first use, and whether a job is using it.
static ZYGOTE: Mutex<Slot> = Mutex::new(Slot {
    busy: false,
    running: None,
    failed_at: None,
});
/// Signalled when a job is done with the zygote.
static FREED: Condvar = Condvar::new();

struct Slot {
    busy: bool,
    /// Not here while a job uses it.
    running: Option<Running>,
    /// When it last could not be started.
    failed_at: Option<Instant>,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    limits: WorkerLimits,
}

impl Running {
    fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slot() -> MutexGuard<'static, Slot> {
    // every change to the slot is a single assignment: a panic never leaves it half-made
    ZYGOTE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks the zygote free again when the job using it ends, however it ends; the zygote is
/// given back only when the job went well (`running` is set then).
struct InUse {
    running: Option<Running>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut slot = slot();
        slot.running = self.running.take();
        slot.busy = false;
        FREED.notify_one();
    }
}

/// Makes a sheet of `input` in a child of the zygote (blocking: call it off the runtime),
/// waiting at most [`WAIT_FOR_ZYGOTE`] for the jobs before it. `None`: the zygote stayed busy
/// or cannot be started; run the job one-shot. Otherwise the child's exit status and what it
/// wrote.
pub fn run(limits: WorkerLimits, input: &[u8]) -> Option<Result<(u32, Vec<u8>), ZygoteError>> {
    if input.len() > MAX_JOB {
        return None;
    }
    let (mut slot, _) = FREED
        .wait_timeout_while(slot(), WAIT_FOR_ZYGOTE, |s| s.busy)
        .unwrap_or_else(PoisonError::into_inner);
    if slot.busy {
        return None;
    }
    // a zygote that ended meanwhile (killed, or it failed) is replaced
    let mut running = slot
        .running
        .take()
        .filter(|r| r.limits == limits)
        .and_then(|mut r| r.is_alive().then_some(r));
    if running.is_none() {
        if slot.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return None;
        }
        match start(limits) {
            Ok(started) => running = Some(started),
            Err(e) => {
                tracing::warn!(error = %e, "the previews zygote cannot start; sheets run one-shot");
                slot.failed_at = Some(Instant::now());
                return None;
            }
        }
    }
    let mut running = running?;
    slot.busy = true;
    drop(slot);
    let mut in_use = InUse { running: None };
    let answer = ask(&mut running, input);
    if answer.is_ok() {
        in_use.running = Some(running);
    }
    // otherwise (and if `ask` panicked) it is killed and reaped when dropped, and the next job
    // starts a new one
    drop(in_use);
    Some(answer)
}

/// A request to the keeper thread: start a zygote under these limits, answer here.
type StartRequest = (
    WorkerLimits,
    std_mpsc::SyncSender<Result<Running, ZygoteError>>,
);

/// The thread that starts the zygote. The zygote dies with the thread that started it (the
/// parent-death signal follows the thread, not the process), and the blocking threads that
/// make sheets come and go: this one lives as long as the server.
static KEEPER: OnceLock<Option<std_mpsc::Sender<StartRequest>>> = OnceLock::new();

fn start(limits: WorkerLimits) -> Result<Running, ZygoteError> {
    let keeper = KEEPER.get_or_init(|| {
        let (requests, incoming) = std_mpsc::channel::<StartRequest>();
        std::thread::Builder::new()
            .name("strata-zygote-keeper".into())
            .spawn(move || {
                for (limits, reply) in incoming {
                    let _ = reply.send(spawn_zygote(limits));
                }
            })
            .ok()
            .map(|_| requests)
    });
    let Some(keeper) = keeper else {
        return Err(ZygoteError::Io(
            "cannot start its keeper thread",
            std::io::Error::other("thread spawn failed"),
        ));
    };
    let (reply, started) = std_mpsc::sync_channel(1);
    keeper
        .send((limits, reply))
        .map_err(|_| ZygoteError::Malformed)?;
    started.recv().map_err(|_| ZygoteError::Malformed)?
}

fn spawn_zygote(limits: WorkerLimits) -> Result<Running, ZygoteError> {
    // the zygote itself needs no CPU limit (its children set their own)
    let zygote_limits = WorkerLimits {
        cpu_secs: 0,
        ..limits
    };
    let mut child = child_command(zygote_limits, &["previews-zygote"])
        .spawn()
        .map_err(|e| ZygoteError::Io("cannot start", e))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ZygoteError::Malformed);
    };
    Ok(Running {
        child,
        stdin,
        stdout,
        limits,
    })
}

/// One job: the request, then the answer within the child's wall time and a margin.
fn ask(running: &mut Running, input: &[u8]) -> Result<(u32, Vec<u8>), ZygoteError> {
    running
        .stdin
        .write_all(&(input.len() as u32).to_be_bytes())
        .and_then(|()| running.stdin.write_all(input))
        .and_then(|()| running.stdin.flush())
        .map_err(|e| ZygoteError::Io("writing the job", e))?;
    let wait = SHEET_WALL_TIME + ANSWER_MARGIN;
    let deadline = Instant::now() + wait;
    let mut header = [0u8; 8];
    read_within(&mut running.stdout, &mut header, deadline, wait)?;
    let status = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if length > MAX_OUTPUT {
        return Err(ZygoteError::Malformed);
    }
    let mut answer = vec![0u8; length];
    read_within(&mut running.stdout, &mut answer, deadline, wait)?;
    Ok((status, answer))
}

/// Fills `buf` from `from` before `deadline`.
fn read_within(
    from: &mut ChildStdout,
    buf: &mut [u8],
    deadline: Instant,
    wait: Duration,
) -> Result<(), ZygoteError> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ZygoteError::NoAnswer(wait));
        }
        if !readable_within(from.as_raw_fd(), left) {
            continue;
        }
        match from.read(&mut buf[got..]) {
            Ok(0) => return Err(ZygoteError::Malformed),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ZygoteError::Io("reading its answer", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_bounded_and_a_clean_end_is_none() {
        let mut job = 3u32.to_be_bytes().to_vec();
        job.extend_from_slice(b"abc");
        let mut input = &job[..];
        assert_eq!(read_frame(&mut input, 10).unwrap().unwrap(), b"abc");
        assert!(read_frame(&mut input, 10).unwrap().is_none());
        let too_big = 11u32.to_be_bytes();
        assert!(matches!(
            read_frame(&mut &too_big[..], 10),
            Err(ZygoteError::Malformed)
        ));
        let cut = [0u8, 0];
        assert!(matches!(
            read_frame(&mut &cut[..], 10),
            Err(ZygoteError::Malformed)
        ));
    }
}
