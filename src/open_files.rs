//! The process's open-file limit (`RLIMIT_NOFILE`). Every connection, event stream, segment
//! file and database handle is a file descriptor, and the usual soft limit (often 1024) is far
//! below what `http.max_connections` allows, so at start Strata raises the soft limit to the
//! hard limit (the most an unprivileged process may take). Where the hard limit is "unlimited",
//! the kernel's per-process ceiling (`/proc/sys/fs/nr_open`, else 1,048,576) is used instead.

/// Why the limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum OpenFilesError {
    #[error("reading the open-file limit (RLIMIT_NOFILE): {0}")]
    Read(#[source] std::io::Error),
    #[error("raising the open-file limit (RLIMIT_NOFILE) from {from} to {to}: {source}")]
    Raise {
        from: u64,
        to: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("this platform has no RLIMIT_NOFILE")]
    Unsupported,
}

/// The soft limit before and after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub from: u64,
    pub to: u64,
}

/// Used when the hard limit is unlimited and the kernel's ceiling cannot be read.
#[cfg(unix)]
const FALLBACK_CEILING: u64 = 1_048_576;

/// Raises the soft open-file limit to the hard limit; returns both figures (equal when it was
/// already there).
#[cfg(unix)]
pub fn raise_to_hard_limit() -> Result<Raised, OpenFilesError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(OpenFilesError::Read(std::io::Error::last_os_error()));
    }
    let from = figure(limit.rlim_cur);
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        kernel_ceiling()
    } else {
        figure(limit.rlim_max)
    };
    if from >= target {
        return Ok(Raised { from, to: from });
    }
    let raised = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit; the call only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(OpenFilesError::Raise {
            from,
            to: target,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Raised { from, to: target })
}

#[cfg(not(unix))]
pub fn raise_to_hard_limit() -> Result<Raised, OpenFilesError> {
    Err(OpenFilesError::Unsupported)
}

/// A limit as a number (`rlim_t` is `u64` on Linux but not on every Unix).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
fn figure(value: libc::rlim_t) -> u64 {
    value as u64
}

/// The most descriptors the kernel lets one process have.
#[cfg(unix)]
fn kernel_ceiling() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_CEILING)
}

/// Raises the limit and logs the figure (`info`), or why it could not (`warn`; Strata runs on
/// with the limit it has).
pub fn raise_and_log() {
    match raise_to_hard_limit() {
        Ok(Raised { from, to }) if from < to => {
            tracing::info!("open-file limit raised from {from} to {to}");
        }
        Ok(Raised { to, .. }) => {
            tracing::info!("open-file limit is {to} (already the hard limit)");
        }
        Err(error) => {
            tracing::warn!(%error, "open-file limit left as it is; busy servers may run out of file descriptors");
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn soft_and_hard() -> (u64, u64) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        (figure(limit.rlim_cur), figure(limit.rlim_max))
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (_, hard) = soft_and_hard();
        let raised = raise_to_hard_limit().expect("raising within the hard limit is allowed");
        let (soft, _) = soft_and_hard();
        assert_eq!(soft, raised.to);
        assert!(raised.to >= raised.from);
        if hard != libc::RLIM_INFINITY {
            assert_eq!(soft, hard);
        }
        // a second call finds nothing to do
        assert_eq!(
            raise_to_hard_limit().ok(),
            Some(Raised {
                from: soft,
                to: soft
            })
        );
    }
}
