//! One-shot child processes: a job that decodes stored media (a scrub-preview sheet, a precise
//! clip's edge) runs once in `strata <command>` under the worker's limits, is given all of its
//! input on stdin and answers on stdout. `run` writes the input, reads at most `max_output`
//! bytes of output and waits for the exit status; a watchdog thread kills the process after
//! `wall_time` (its CPU time is limited by `WorkerLimits::cpu_secs`). Blocking: call it off the
//! async runtime (`spawn_blocking`). The output is the child's, made from hostile bytes: the
//! caller checks it as hostile.

use std::io::{Read, Write};
use std::process::Child;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use super::{child_command, WorkerLimits};

/// One job for a one-shot process.
#[derive(Debug, Clone, Copy)]
pub struct OneShot<'a> {
    pub limits: WorkerLimits,
    /// The subcommand and its arguments.
    pub args: &'a [&'a str],
    pub wall_time: Duration,
    /// The largest output taken; a process that writes more is killed.
    pub max_output: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("its pipes were not set up")]
    Pipes,
    #[error("it wrote more than {0} bytes")]
    TooMuch(usize),
    #[error("it ended with {0}")]
    Failed(std::process::ExitStatus),
}

impl OneShotError {
    /// The exit code of a process that ended by itself with one (not killed).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Failed(status) => status.code(),
            _ => None,
        }
    }
}

/// Runs `job` on `input` and returns what it wrote (blocking).
pub fn run(job: OneShot<'_>, input: &[u8]) -> Result<Vec<u8>, OneShotError> {
    let mut child = child_command(job.limits, job.args)
        .spawn()
        .map_err(|e| OneShotError::Io("cannot start", e))?;
    let pipes = (child.stdin.take(), child.stdout.take());
    let child = Arc::new(Mutex::new(child));
    let kill = |child: &Mutex<Child>| {
        // a reaped child is not signalled (std keeps its status)
        let _ = child.lock().unwrap_or_else(|p| p.into_inner()).kill();
    };
    let (Some(mut stdin), Some(stdout)) = pipes else {
        kill(&child);
        let _ = child.lock().unwrap_or_else(|p| p.into_inner()).wait();
        return Err(OneShotError::Pipes);
    };
    let (done, finished) = std_mpsc::channel::<()>();
    let watched = child.clone();
    let name = job.args.first().copied().unwrap_or("one-shot").to_string();
    let wall_time = job.wall_time;
    let watchdog = std::thread::Builder::new()
        .name("strata-one-shot-watchdog".into())
        .spawn(move || {
            if let Err(std_mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(wall_time) {
                tracing::warn!(process = %name, "a one-shot process took too long; killed");
                kill(&watched);
            }
        });
    let watchdog = match watchdog {
        Ok(watchdog) => watchdog,
        Err(e) => {
            // no wall-clock limit without it: the process does not run
            kill(&child);
            let _ = child.lock().unwrap_or_else(|p| p.into_inner()).wait();
            return Err(OneShotError::Io("cannot start its watchdog", e));
        }
    };
    // every one-shot process reads all of its input before it writes: writing all first
    // cannot block on a full output pipe
    let wrote = stdin.write_all(input);
    drop(stdin);
    let mut output = Vec::new();
    let read = stdout
        .take(job.max_output as u64 + 1)
        .read_to_end(&mut output);
    let too_much = output.len() > job.max_output;
    if too_much {
        // it would write on: it is not what the job writes
        kill(&child);
    }
    // polled, not waited for under the lock, so the watchdog can still kill a process that
    // closed its output and hangs
    let status = loop {
        match child.lock().unwrap_or_else(|p| p.into_inner()).try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => {
                kill(&child);
                let _ = child.lock().unwrap_or_else(|p| p.into_inner()).wait();
                break Err(OneShotError::Io("cannot wait for it", e));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = done.send(());
    let _ = watchdog.join();
    let status = status?;
    if too_much {
        return Err(OneShotError::TooMuch(job.max_output));
    }
    if !status.success() {
        return Err(OneShotError::Failed(status));
    }
    wrote.map_err(|e| OneShotError::Io("writing its input", e))?;
    read.map_err(|e| OneShotError::Io("reading its output", e))?;
    Ok(output)
}
