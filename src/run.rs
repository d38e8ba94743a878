//! The `run` table: one row per command run, opened when it starts and closed with its outcome.
//!
//! A run left `running` was interrupted (killed, or the machine stopped); `status` shows it so.

use anyhow::Result;
use rusqlite::{Connection, params};
use serde_json::Value;

use crate::exit::{self, Outcome};
use crate::redact::redact;

/// Current UTC time as ISO 8601 with seconds, the format of every timestamp oppsync writes.
pub(crate) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Inserts a `running` row for `command` and returns its id.
pub(crate) fn start(conn: &Connection, command: &str, args: &[String]) -> Result<i64> {
    conn.execute(
        "INSERT INTO run (command, args, started_at) VALUES (?1, ?2, ?3)",
        params![command, serde_json::to_string(args)?, now()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// How a run ended, as stored in its row.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub outcome: &'static str,
    pub exit_code: u8,
    pub message: Option<String>,
}

/// Closes the run with the command's result and its counters.
pub(crate) fn finish(
    conn: &Connection,
    run_id: i64,
    result: &Result<Outcome>,
    counts: &Value,
) -> Result<Finished> {
    let (outcome, code, message) = match result {
        Ok(Outcome::Done) => ("done", 0, None),
        Ok(Outcome::DoneWithRejects) => ("done_with_rejects", 3, None),
        Err(err) if exit::is_usage(err) => ("usage_error", 2, Some(exit::error_line(err))),
        Err(err) => ("failed", 1, Some(exit::error_line(err))),
    };
    conn.execute(
        "UPDATE run SET finished_at = ?2, outcome = ?3, exit_code = ?4, counts = ?5, message = ?6
         WHERE run_id = ?1",
        params![
            run_id,
            now(),
            outcome,
            code,
            redact(&counts.to_string()),
            message
        ],
    )?;
    Ok(Finished {
        outcome,
        exit_code: code,
        message,
    })
}
