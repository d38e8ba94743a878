//! Stopping on request: in `pull`, `push`, `sync` (once or `--every`) and `recheck`, the first
//! SIGTERM or SIGINT asks the command to stop at the next safe point (between pages of a pull,
//! between requests of a push or recheck: what is in flight is answered and recorded first; a
//! wait before a retry, or for Marketo's rate window, ends at once, the call not made); a second
//! one ends the process at once, which SQLite's journal makes safe (the database stays
//! consistent, and the next run resumes).
//!
//! A step of SQL that can take minutes on a large org (building the indexes a first pull set
//! aside, refreshing or evaluating the export rows: over a minute at 1M opportunities) has no
//! safe point inside it, so it is run `interruptible`: a stop request interrupts it, SQLite
//! rolls back what it had not committed, and the next run does it again, rather than the stop
//! waiting for its end (or for systemd's SIGKILL).
//!
//! The flag is process-wide because the signal arrives in a handler that can reach nothing
//! else; the pull, the push, `recheck`, `sync --every` and SQLite's progress handler read it.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rusqlite::Connection;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether `install` ran: without its handlers a signal ends the process at once, and nothing
/// needs interrupting.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// How many of SQLite's virtual machine steps a statement runs between two looks at the flag:
/// well under a millisecond, and a negligible cost.
const STEPS_BETWEEN_LOOKS: std::ffi::c_int = 10_000;

thread_local! {
    /// Whether this thread is running an `interruptible` step.
    static IN_STEP: Cell<bool> = const { Cell::new(false) };
}

/// Installs the handlers, once: the first signal sets the flag, a second one exits with code 1.
pub(crate) fn install() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Twice installed, the first signal would meet the second pair's shutdown with the flag
    // already set by the first pair, and exit at once.
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
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
        return Err(Stopped { during: None }.into());
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

/// Waits `duration` before a retry, or fails with `Stopped` as soon as a stop is asked for
/// (Dataverse's Retry-After asks for up to five minutes; Marketo's rate window is 20 s).
pub(crate) fn pause(duration: Duration) -> Result<()> {
    sleep(duration);
    check()
}

/// Gives a connection that writes (`db::open`) the progress handler through which a stop
/// request interrupts an `interruptible` step: every `STEPS_BETWEEN_LOOKS` steps of a
/// statement, it interrupts the statement when a stop was asked for and the thread running it
/// is inside such a step. Set once, as rusqlite sets it only through a connection borrowed
/// mutably, which a step's transaction holds.
pub(crate) fn watch(conn: &mut Connection) -> Result<()> {
    conn.progress_handler(
        STEPS_BETWEEN_LOOKS,
        Some(|| IN_STEP.with(Cell::get) && requested()),
    )?;
    Ok(())
}

/// Runs `step`, SQL that may take minutes on a connection `watch` was given, so that a stop
/// request interrupts it: SQLite abandons the statement it is running, which fails with
/// SQLITE_INTERRUPT and rolls back the transaction it is in, and the failure becomes `Stopped`
/// saying it was `what` that stopped. The caller's cleanup after a failed step runs after this
/// returns, so it is not interrupted. Without `install`'s handlers it only runs `step`.
pub(crate) fn interruptible<T>(what: &'static str, step: impl FnOnce() -> Result<T>) -> Result<T> {
    /// Puts back whether the thread was in a step when dropped, also when `step` panics: a step
    /// inside another leaves the outer one interruptible.
    struct InStep(bool);
    impl Drop for InStep {
        fn drop(&mut self) {
            IN_STEP.with(|in_step| in_step.set(self.0));
        }
    }
    if !INSTALLED.load(Ordering::SeqCst) {
        return step();
    }
    let in_step = InStep(IN_STEP.with(|in_step| in_step.replace(true)));
    let result = step();
    drop(in_step);
    result.map_err(|err| {
        if requested() && interrupted(&err) {
            Stopped { during: Some(what) }.into()
        } else {
            err
        }
    })
}

/// Whether SQLite failed `err` because the statement was interrupted.
fn interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::OperationInterrupted
        )
    })
}

/// The command stopped because a stop was asked for: at a safe point, or `during` a long step
/// of SQL, left undone (its transaction rolled back; a full evaluation in WAL mode keeps the
/// views it committed, but not `built`, so the next run evaluates in full again).
#[derive(Debug)]
pub(crate) struct Stopped {
    during: Option<&'static str>,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.during {
            None => f.write_str(
                "stopped on request (SIGTERM or SIGINT): what was answered is recorded; the next run resumes",
            ),
            Some(what) => write!(
                f,
                "stopped on request (SIGTERM or SIGINT) while {what}, left undone: the next run \
                 does it again"
            ),
        }
    }
}

impl std::error::Error for Stopped {}

/// Whether an error is a requested stop.
pub(crate) fn is_stopped(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<Stopped>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_step() -> bool {
        IN_STEP.with(Cell::get)
    }

    /// A step inside another, ending in an error or a panic, leaves the outer step
    /// interruptible, and the thread outside any step once the outer one ends. The handlers are
    /// installed for the guard to run; no stop is asked for, so no other test is interrupted.
    #[test]
    fn a_nested_step_puts_back_the_state_it_found() {
        install().unwrap();
        assert!(!in_step());
        let outer = interruptible("the outer step", || {
            let failed: Result<()> = interruptible("a failing step", || {
                assert!(in_step());
                anyhow::bail!("the inner step failed")
            });
            assert!(failed.is_err());
            let after_failure = in_step();
            let panicked = std::panic::catch_unwind(|| {
                interruptible("a panicking step", || -> Result<()> {
                    panic!("inner panic")
                })
            });
            assert!(panicked.is_err());
            Ok((after_failure, in_step()))
        });
        assert_eq!(
            outer.unwrap(),
            (true, true),
            "the outer step after the inner ones"
        );
        assert!(!in_step(), "no step is running once the outer one ends");
    }
}
