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

/// Removes what is older than `keep_days` days: the API calls and per-record outcomes of old
/// runs, refusals that hold nothing back any more, and the old runs nothing refers to any more (runs that staged records, or whose
/// acknowledgements or problems still stand, stay). Returns how many runs went.
pub(crate) fn prune(conn: &mut Connection, keep_days: u32) -> Result<usize> {
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64::from(keep_days)))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let tx = conn.transaction()?;
    let old = "SELECT run_id FROM run WHERE started_at < ?1 AND outcome <> 'running'";
    tx.execute(
        &format!("DELETE FROM api_call WHERE run_id IN ({old})"),
        [&cutoff],
    )?;
    tx.execute(
        &format!("DELETE FROM push_outcome WHERE run_id IN ({old})"),
        [&cutoff],
    )?;
    tx.execute(
        &format!("DELETE FROM staged_page WHERE run_id IN ({old})"),
        [&cutoff],
    )?;
    tx.execute(
        &format!("DELETE FROM rejected_record WHERE run_id IN ({old})"),
        [&cutoff],
    )?;
    // A refusal holds a record back for at most a week (`retry_refused_hours`, 168 at most);
    // one older than that and than `keep_days` only tells what happened, and would stay for
    // good when its record left Dynamics or was never sent again.
    let week = (chrono::Utc::now() - chrono::Duration::hours(168))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    tx.execute(
        "DELETE FROM mkto_refused WHERE refused_at < ?1 AND refused_at < ?2",
        [&cutoff, &week],
    )?;
    // The last sample stays: `status` shows it, and `sync` times the next from it.
    tx.execute(
        "DELETE FROM marketo_sample WHERE sampled_at < ?1
           AND sample_id < (SELECT max(sample_id) FROM marketo_sample)",
        [&cutoff],
    )?;
    let runs = tx.execute(
        "DELETE FROM run WHERE started_at < ?1 AND outcome <> 'running'
           AND command NOT IN ('pull', 'sync', 'demo', 'init')
           AND NOT EXISTS (SELECT 1 FROM mkto_ack a WHERE a.run_id = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM problem p WHERE p.first_run = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM problem p WHERE p.last_run = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM marketo_describe d WHERE d.run_id = run.run_id)",
        [&cutoff],
    )?;
    tx.commit()?;
    Ok(runs)
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
