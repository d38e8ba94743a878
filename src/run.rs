//! The `run` table: one row per command run, opened when it starts and closed with its outcome.
//!
//! A run whose process stopped before recording its outcome (killed, or the machine stopped) is
//! closed as `interrupted` by the next writing command (`start`); until then `status` shows it so.

use anyhow::Result;
use rusqlite::{Connection, params};
use serde_json::Value;

use crate::exit::{self, Outcome};

/// Current UTC time as ISO 8601 with seconds, the format of every timestamp oppsync writes.
pub(crate) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What an interrupted run's `message` says, unless the run had written one.
pub(crate) const INTERRUPTED: &str = "its process stopped before recording an outcome (killed, out of memory, \
                           the machine stopped, or the recording failed)";

/// Closes as `interrupted` the runs still `running`, then inserts a `running` row for `command`
/// and returns its id. Only a writing command calls it, holding the writer lock (which the OS
/// lets go when its holder dies), so a run still `running` here has no process any more.
pub(crate) fn start(conn: &Connection, command: &str, args: &[String]) -> Result<i64> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "UPDATE run SET outcome = 'interrupted', message = coalesce(message, ?1)
         WHERE outcome = 'running'",
        [INTERRUPTED],
    )?;
    tx.execute(
        "INSERT INTO run (command, args, started_at) VALUES (?1, ?2, ?3)",
        params![command, serde_json::to_string(args)?, now()],
    )?;
    let run_id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(run_id)
}

/// Removes what is older than `keep_days` days: the API calls and per-record outcomes of old
/// runs, refusals that hold nothing back any more, problems resolved by then, and the old runs
/// nothing refers to any more (runs that staged records, or whose acknowledgements or
/// problems still stand, stay; a pull or sync that staged nothing, as most cycles of a quiet
/// org, goes). Returns how many runs went.
///
/// SQLite's foreign key checks are off while it does: deleting a run would make SQLite look
/// for the rows that refer to it in every table that may, and the staged tables' `staged_run`
/// has no index (one on each would cost every page staged), so each run deleted read every
/// staged record (at 100k opportunities, 8.6 s to delete 41 runs). The query instead keeps
/// every run something refers to: the staged records refer only to runs of the commands that
/// stage, which it keeps unless their counts say they staged nothing, and it looks up each
/// other reference (a test holds this to the schema: `tests::REFERRING_TO_RUNS`).
pub(crate) fn prune(conn: &mut Connection, keep_days: u32) -> Result<usize> {
    crate::db::without_foreign_key_checks(conn, |conn| prune_unchecked(conn, keep_days))
}

/// Problems resolved before the cutoff (last seen before it); standing ones stay however old.
/// Served by the partial index `problem_resolved`.
const PRUNE_RESOLVED_PROBLEMS: &str =
    "DELETE FROM problem WHERE resolved_run IS NOT NULL AND last_seen < ?1";

fn prune_unchecked(conn: &mut Connection, keep_days: u32) -> Result<usize> {
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(i64::from(keep_days)))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let tx = conn.transaction()?;
    // A run `interrupted`, or still `running` (closed as interrupted by no writing command
    // since this build), is pruned as any other: prune runs at the end of a writing command,
    // after its own run is recorded, and holds the writer lock, so no other run is under way.
    let old = "SELECT run_id FROM run WHERE started_at < ?1";
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
    tx.execute(PRUNE_RESOLVED_PROBLEMS, [&cutoff])?;
    // The last sample stays: `status` shows it, and `sync` times the next from it.
    tx.execute(
        "DELETE FROM marketo_sample WHERE sampled_at < ?1
           AND sample_id < (SELECT max(sample_id) FROM marketo_sample)",
        [&cutoff],
    )?;
    // Without foreign key checks, this query alone keeps the references whole: the rows of
    // old runs in the four tables above are gone, the staged records refer only to runs of
    // the commands that stage, kept here unless their counts (written as each page commits,
    // and kept by a failed run) say that they upserted (but for records staged again
    // unchanged, which keep the run that staged them), deleted and swept nothing, and every
    // other reference is looked up. A pull's or sync's counts start at nothing staged
    // (`cmd::counts_before`), and a failed sync keeps its pull's under `pull`; counts that
    // are not there (a run from before that, or one interrupted, whose counts were never
    // written) keep the run. So do counts that are not JSON, which `json_extract` would fail
    // on, failing every writing run from then on: an earlier build cut a server's token out
    // of them as text, where `redact::json` now cuts only their strings. The last
    // successful run of each command stays too, however old:
    // `status` shows the last successful push or sync.
    let runs = tx.execute(
        "DELETE FROM run WHERE started_at < ?1
           AND (command NOT IN ('pull', 'sync', 'demo')
                OR command = 'pull' AND CASE WHEN json_valid(counts) THEN
                    coalesce(json_extract(counts, '$.upserted')
                    - coalesce(json_extract(counts, '$.unchanged'), 0)
                    + json_extract(counts, '$.deleted')
                    + json_extract(counts, '$.missing_from_full_pull'), 1) = 0 END
                OR command = 'sync' AND CASE WHEN json_valid(counts) THEN
                    coalesce(json_extract(counts, '$.pull.upserted')
                    - coalesce(json_extract(counts, '$.pull.unchanged'), 0)
                    + json_extract(counts, '$.pull.deleted')
                    + json_extract(counts, '$.pull.missing_from_full_pull'), 1) = 0 END)
           AND NOT EXISTS (SELECT 1 FROM mkto_ack a WHERE a.run_id = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM problem p WHERE p.first_run = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM problem p WHERE p.last_run = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM marketo_describe d WHERE d.run_id = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM marketo_sample s WHERE s.run_id = run.run_id)
           AND NOT EXISTS (SELECT 1 FROM pull_state p WHERE p.run_id = run.run_id)
           AND run_id NOT IN (SELECT max(run_id) FROM run
               WHERE outcome IN ('done', 'done_with_rejects') GROUP BY command)",
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
            crate::redact::json(counts),
            message
        ],
    )?;
    Ok(Finished {
        outcome,
        exit_code: code,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column that refers to a run, and how `prune` keeps it whole without SQLite's
    /// foreign key checks. A new one fails `prune_knows_every_column_that_refers_to_a_run`
    /// until `prune` is taught about it and it is added here.
    const REFERRING_TO_RUNS: &[(&str, &str)] = &[
        // Rows of old runs, deleted first.
        ("api_call", "run_id"),
        ("push_outcome", "run_id"),
        ("staged_page", "run_id"),
        ("rejected_record", "run_id"),
        // Looked up: their runs stay.
        ("mkto_ack", "run_id"),
        ("problem", "first_run"),
        ("problem", "last_run"),
        ("marketo_describe", "run_id"),
        ("marketo_sample", "run_id"),
        ("pull_state", "run_id"),
        // Written by the commands that stage (pull, sync, demo), whose runs stay unless their
        // counts say they staged nothing.
        ("account", "staged_run"),
        ("connection", "staged_run"),
        ("connectionrole", "staged_run"),
        ("contact", "staged_run"),
        ("opportunity", "staged_run"),
        ("systemuser", "staged_run"),
    ];

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        conn
    }

    #[test]
    fn prune_knows_every_column_that_refers_to_a_run() {
        let conn = db();
        let mut found: Vec<(String, String)> = conn
            .prepare(
                "SELECT m.name, f.\"from\" FROM sqlite_schema m, pragma_foreign_key_list(m.name) f
                 WHERE m.type = 'table' AND f.\"table\" = 'run'",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        found.sort();
        let mut known: Vec<(String, String)> = REFERRING_TO_RUNS
            .iter()
            .map(|(t, c)| ((*t).to_string(), (*c).to_string()))
            .collect();
        known.sort();
        assert_eq!(found, known);
    }

    /// A push run today, the last successful one, so that `prune` may remove older pushes.
    const RECENT_PUSH: &str = "INSERT INTO run (run_id, command, args, started_at, outcome)
        VALUES (9999, 'push', '[]', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), 'done');";

    /// `staged` opportunities staged by run 1, and `old` push runs a year old that nothing
    /// refers to; returns how many of SQLite's virtual machine steps (in thousands) a prune
    /// took, and how many runs it removed.
    fn prune_steps(staged: u32, old: u32) -> (u64, usize) {
        let mut conn = db();
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at, outcome)
                 VALUES (1, 'pull', '[]', '2001-01-01T00:00:00Z', 'done');",
        )
        .unwrap();
        conn.execute_batch(RECENT_PUSH).unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO opportunity (opportunityid, raw, source_file, staged_run, seen_run)
             SELECT printf('opp-%06d', i), '{}', 'opportunities.json', 1, 1 FROM n",
            [staged],
        )
        .unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO run (run_id, command, args, started_at, outcome)
             SELECT 100 + i, 'push', '[]', '2001-01-02T00:00:00Z', 'done' FROM n",
            [old],
        )
        .unwrap();
        let (removed, steps) = crate::db::steps_taken(&mut conn, |conn| prune(conn, 30).unwrap());
        let checked: bool = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert!(checked, "foreign key checks are on again after a prune");
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0, "no row refers to a run pruned");
        (steps, removed)
    }

    /// The runs left, but for `RECENT_PUSH`.
    fn runs_left(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT run_id FROM run WHERE run_id < 9999 ORDER BY run_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_run_starting_closes_the_runs_left_running_as_interrupted() {
        let conn = db();
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at, outcome, exit_code, message)
             VALUES (1, 'pull', '[]', '2026-01-01T00:00:00Z', 'done', 0, NULL),
                    (2, 'push', '[]', '2026-01-02T00:00:00Z', 'failed', 1, 'Marketo down');
             -- Killed: never finished. The second wrote a message before it stopped.
             INSERT INTO run (run_id, command, args, started_at)
             VALUES (3, 'sync', '[]', '2026-01-03T00:00:00Z'), (4, 'push', '[]', '2026-01-04T00:00:00Z');
             UPDATE run SET message = 'said before' WHERE run_id = 4;",
        )
        .unwrap();
        let id = start(&conn, "pull", &["--full".to_string()]).unwrap();
        assert_eq!(id, 5);
        let runs = crate::db::texts(
            &conn,
            "SELECT json_array(run_id, outcome, exit_code, finished_at, message) FROM run
             ORDER BY run_id",
            [],
        );
        let interrupted = format!(r#"[3,"interrupted",null,null,"{INTERRUPTED}"]"#);
        assert_eq!(
            runs,
            [
                r#"[1,"done",0,null,null]"#,
                r#"[2,"failed",1,null,"Marketo down"]"#,
                &interrupted,
                r#"[4,"interrupted",null,null,"said before"]"#,
                r#"[5,"running",null,null,null]"#,
            ],
            "when a killed run stopped is not known: no finished_at, no exit code"
        );
    }

    #[test]
    fn prune_keeps_every_old_run_something_refers_to() {
        let mut conn = db();
        conn.execute_batch(RECENT_PUSH).unwrap();
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 16)
             INSERT INTO run (run_id, command, args, started_at, outcome)
             SELECT i, 'push', '[]', '2001-01-01T00:00:00Z', 'done' FROM n;
             INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
                 VALUES ('lead', 'a@example.com', '{}', '1', 10, '2001-01-01T00:00:00Z');
             INSERT INTO problem (stage, subject, key, reason, first_run, first_seen, last_run, last_seen)
                 VALUES ('push', 'lead', 'b@example.com', '1003', 11, 'then', 12, 'then');
             INSERT INTO marketo_describe (base_url, client_id, object, fields, described_at, run_id)
                 VALUES ('https://x.invalid', 'id', 'lead', '[]', '2001-01-01T00:00:00Z', 13);
             INSERT INTO marketo_sample (run_id, sampled_at) VALUES (14, '2001-01-01T00:00:00Z');
             INSERT INTO pull_state (entity_set, mode, run_id, updated_at)
                 VALUES ('opportunities', 'watermark', 15, '2001-01-01T00:00:00Z');",
        )
        .unwrap();
        assert_eq!(prune(&mut conn, 30).unwrap(), 1);
        assert_eq!(
            runs_left(&conn),
            [10, 11, 12, 13, 14, 15],
            "only the run nothing refers to went"
        );
        let dangling: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);
    }

    #[test]
    fn old_interrupted_and_init_runs_go_unless_they_may_have_staged_or_something_refers_to_them() {
        let mut conn = db();
        conn.execute_batch(RECENT_PUSH).unwrap();
        // Killed runs: their counts were never written, and their outcome is `running` until
        // the next writing command closes them as `interrupted` (both are pruned alike).
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at) VALUES
                 (20, 'push', '[]', '2001-01-01T00:00:00Z'),
                 (21, 'push', '[]', '2001-01-01T00:00:00Z'),
                 (22, 'recheck', '[]', '2001-01-01T00:00:00Z'),
                 (23, 'pull', '[]', '2001-01-01T00:00:00Z'),
                 (24, 'sync', '[]', '2001-01-01T00:00:00Z'),
                 (25, 'push', '[]', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));
             UPDATE run SET outcome = 'interrupted' WHERE run_id IN (20, 23);
             -- `init` stages nothing: an old one goes, but for the last that succeeded.
             INSERT INTO run (run_id, command, args, started_at, outcome) VALUES
                 (26, 'init', '[]', '2001-01-01T00:00:00Z', 'done'),
                 (27, 'init', '[]', '2001-01-02T00:00:00Z', 'done');
             INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
                 VALUES ('lead', 'a@example.com', '{}', '1', 21, '2001-01-01T00:00:00Z');
             INSERT INTO api_call (run_id, method, path, attempt, duration_ms, at)
                 VALUES (20, 'POST', '/rest/v1/leads.json', 1, 5, '2001-01-01T00:00:00Z');",
        )
        .unwrap();
        assert_eq!(prune(&mut conn, 30).unwrap(), 3);
        assert_eq!(
            runs_left(&conn),
            [21, 23, 24, 25, 27],
            "the push with an acknowledgement, the pull and sync that may have staged, the recent \
             one and the last init stay"
        );
        let calls: i64 = conn
            .query_row("SELECT count(*) FROM api_call", [], |r| r.get(0))
            .unwrap();
        assert_eq!(calls, 0, "the old interrupted push's calls went with it");
    }

    /// Counts that are not JSON (cut as text by an earlier build, a server's token spelling
    /// JSON) keep their run, where `json_extract` failed the prune, and every writing run with
    /// it; a pull or sync whose counts say it staged nothing still goes.
    #[test]
    fn old_runs_whose_counts_are_not_json_stay_and_the_prune_goes_on() {
        let mut conn = db();
        conn.execute_batch(RECENT_PUSH).unwrap();
        let staged_nothing =
            r#"{"upserted":0,"unchanged":0,"deleted":0,"missing_from_full_pull":0}"#;
        conn.execute(
            "INSERT INTO run (run_id, command, args, started_at, outcome, counts) VALUES
                 (30, 'pull', '[]', '2001-01-01T00:00:00Z', 'done', '{<redacted>0,\"deleted\":0}'),
                 (31, 'sync', '[]', '2001-01-01T00:00:00Z', 'done', '{\"pull\":{<redacted>1}}'),
                 (32, 'pull', '[]', '2001-01-01T00:00:00Z', 'done', ?1),
                 (33, 'sync', '[]', '2001-01-01T00:00:00Z', 'done', json_object('pull', json(?1))),
                 (34, 'pull', '[]', '2001-01-02T00:00:00Z', 'done', ?1),
                 (35, 'sync', '[]', '2001-01-02T00:00:00Z', 'done', json_object('pull', json(?1)))",
            [staged_nothing],
        )
        .unwrap();
        assert_eq!(prune(&mut conn, 30).unwrap(), 2);
        assert_eq!(
            runs_left(&conn),
            [30, 31, 34, 35],
            "the unreadable ones stay, and the last successful pull and sync"
        );
    }

    #[test]
    fn old_resolved_problems_are_found_by_their_index() {
        let conn = db();
        let plan = crate::db::query_plan(&conn, PRUNE_RESOLVED_PROBLEMS, ["2001-01-01T00:00:00Z"]);
        assert!(plan.contains("USING INDEX problem_resolved"), "{plan}");
    }

    #[test]
    fn pruning_runs_does_not_read_the_staged_records() {
        let (few, removed) = prune_steps(100, 30);
        assert_eq!(removed, 30);
        let (many, removed) = prune_steps(20_000, 30);
        assert_eq!(removed, 30);
        // With the checks on, deleting each run read every staged opportunity: 30 x 20,000
        // rows, about 2,000 thousand steps more.
        assert!(
            many <= few + 20,
            "{many} thousand steps with 20,000 staged opportunities, {few} with 100"
        );
    }
}
