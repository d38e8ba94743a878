//! Exit codes (PRODUCT.md section 4) and the error type that selects exit code 2.
//!
//! Every failure is an `anyhow::Error`; a `UsageError` anywhere in its chain means bad usage or
//! configuration (exit 2), anything else is a failure after which the state is consistent and a
//! rerun is safe (exit 1).

use std::fmt;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was done: exit 0.
    Done,
    /// The command finished, but some records were rejected or skipped and listed: exit 3.
    DoneWithRejects,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::DoneWithRejects => 3,
        }
    }
}

/// Bad usage or configuration: the message names the argument, file or setting at fault.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds an `anyhow::Error` that exits with code 2.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// Whether the error is bad usage or configuration.
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<UsageError>())
}

/// The one line printed and stored for a failed command: the error chain, with every known
/// secret cut out (a server may have quoted one back).
pub fn error_line(err: &anyhow::Error) -> String {
    crate::redact::redact(&format!("{err:#}")).replace(['\n', '\r'], " ")
}

/// Prints the error a command stopped with, as one line on stderr, stamped with the time off a
/// terminal like every other line (`progress::warn`).
pub fn print_error(err: &anyhow::Error) {
    crate::progress::warn(&format!("error: {}", error_line(err)));
}

/// The exit code for a failed command: 2 for usage errors, 1 otherwise.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if is_usage(err) { 2 } else { 1 }
}
