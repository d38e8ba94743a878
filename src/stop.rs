//! Stopping on request: the first SIGTERM or SIGINT asks the running command to stop at the
//! next safe point (between pages of a pull, between requests of a push: what is in flight is
//! answered and recorded first); a second one ends the process at once, which SQLite's journal
//! makes safe (the database stays consistent, and the next run resumes).
//!
//! The flag is process-wide because the signal arrives in a handler that can reach nothing
//! else; the pull, the push and `sync --every` read it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers: the first signal sets the flag, a second one exits with code 1.
pub(crate) fn install() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGTERM, SIGINT] {
        // Registered first, so that it sees the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 1, &REQUESTED)?;
        signal_hook::flag::register(signal, &REQUESTED)?;
    }
    Ok(())
}

/// Whether a stop was asked for.
pub(crate) fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Fails with `Stopped` when a stop was asked for.
pub(crate) fn check() -> Result<()> {
    if requested() {
        return Err(Stopped.into());
    }
    Ok(())
}

/// Sleeps for `duration`, waking early on a stop; returns whether the full time passed.
pub(crate) fn sleep(duration: Duration) -> bool {
    let until = Instant::now() + duration;
    while !requested() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
    false
}

/// The command stopped at a safe point because a stop was asked for.
#[derive(Debug)]
pub(crate) struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "stopped on request (SIGTERM or SIGINT): what was answered is recorded; the next run resumes",
        )
    }
}

impl std::error::Error for Stopped {}

/// Whether an error is a requested stop.
pub(crate) fn is_stopped(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Stopped>())
}
