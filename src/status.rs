//! The state of a database at a glance: recent runs, staged records per entity set, what the
//! rule views derive, and rejected records. Reads only.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use std::collections::BTreeMap;

use crate::config::Config;
use crate::db::Writer;
use crate::export_rows;
use crate::plan::{self, Counts, Object};
use crate::stage::SPECS;

/// How many runs `status` lists.
const RECENT_RUNS: usize = 10;
/// How many rejected records `status` lists.
const RECENT_REJECTS: usize = 10;

/// Serialized as the `status --json` contract.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub schema_version: i64,
    /// The process holding the writer lock, if one does: a run in progress (see `runs`), or a
    /// `sync --every` between cycles, with when its next cycle starts (`waiting`).
    pub writer: Option<Writer>,
    /// Why this user cannot tell whether a process holds the writer lock (its lock file may
    /// not be opened), or null: the newest run still recorded `running` is then shown as such,
    /// not as interrupted.
    pub writer_unknown: Option<String>,
    pub runs: Vec<RunRow>,
    pub staged: Vec<StagedCount>,
    pub derived: Derived,
    pub rejected_total: i64,
    pub rejected_recent: Vec<RejectedRow>,
    /// What a push would do now, per object (as `plan` counts it).
    pub pending: BTreeMap<&'static str, Counts>,
    /// The last failed runs, newest first, with their messages.
    pub last_errors: Vec<RunRow>,
    /// The newest push or sync that finished.
    pub last_success: Option<RunRow>,
    /// How far Marketo lags Dynamics: the newest `modifiedon` of a staged opportunity, and of one
    /// whose current export Marketo has acknowledged.
    pub lag: Lag,
    /// Problems still open (records rejected or not sent), oldest first, with when each was
    /// first and last seen; a run exits 3 only when it adds one.
    pub problems: Vec<crate::problem::Open>,
    pub problems_total: i64,
    /// The last sample `sync` made of what Marketo holds (`marketo_sample`), if any.
    pub marketo_sample: Option<Sample>,
}

/// A row of `marketo_sample`.
#[derive(Debug, Serialize)]
pub(crate) struct Sample {
    pub run_id: i64,
    pub sampled_at: String,
    pub leads_asked: i64,
    pub leads_missing: i64,
    pub opportunities_asked: i64,
    pub opportunities_missing: i64,
    pub companies_asked: i64,
    pub companies_missing: i64,
    pub roles_asked: i64,
    pub roles_missing: i64,
    /// Why it could not be looked up.
    pub error: Option<String>,
}

impl Sample {
    /// The leads, opportunities and companies it found missing: what plain `oppsync recheck`
    /// looks for (`recheck::recheck_command`).
    pub(crate) fn more_than_roles_missing(&self) -> i64 {
        self.leads_missing + self.opportunities_missing + self.companies_missing
    }

    /// Every record it found missing.
    pub(crate) fn missing(&self) -> i64 {
        self.more_than_roles_missing() + self.roles_missing
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct RunRow {
    pub run_id: i64,
    pub command: String,
    pub args: Value,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running` while its process still holds the writer lock, `interrupted` for a run that
    /// never finished and whose process is gone.
    pub outcome: String,
    /// The running run's process id.
    pub pid: Option<u32>,
    /// How far the running run got: pages staged, REST calls made, records answered.
    pub progress: Option<Value>,
    pub exit_code: Option<i64>,
    pub counts: Value,
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StagedCount {
    pub entity_set: String,
    pub live: i64,
    pub deleted: i64,
    /// How the next live pull reads the set: `change_tracking` (from the stored delta link) or
    /// `watermark` (change tracking off: by modifiedon, or in full without it); null before
    /// the first live pull.
    pub pull_mode: Option<String>,
    /// Whether the set has `modifiedon`: without change tracking and without it, every pull
    /// reads the set in full.
    pub has_modifiedon: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Derived {
    pub opportunities: i64,
    pub opportunities_with_account: i64,
    pub contact_roles: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct RejectedRow {
    pub run_id: i64,
    pub source: String,
    pub position: i64,
    pub entity_set: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Lag {
    pub newest_staged: Option<String>,
    pub newest_acknowledged: Option<String>,
}

/// The newest `modifiedon` staged and the newest acknowledged by Marketo. Both walk the
/// modifiedon index from the newest: the second stops at the first opportunity Marketo
/// acknowledged instead of joining every one. The `LIMIT 1` in its EXISTS keeps it a lookup
/// for each opportunity walked: without it, SQLite 3.54 turns the EXISTS into a join and sorts
/// every opportunity by modifiedon (0.8 s at 1M opportunities, where this takes milliseconds).
const LAG: &str = "SELECT (SELECT max(modifiedon) FROM opportunity),
    (SELECT o.modifiedon FROM opportunity o
     WHERE EXISTS (SELECT 1 FROM mkto_ack WHERE object = 'opportunity')
       AND o.modifiedon IS NOT NULL AND EXISTS (
         SELECT 1 FROM mkto_ack a WHERE a.object = 'opportunity' AND a.key = o.opportunityid
         LIMIT 1)
     ORDER BY o.modifiedon DESC LIMIT 1)";

/// Reads the status; `writer` is the pid of the process holding the writer lock, if any: its
/// run (the newest one still `running`) is shown as running. With `writer_unknown` (the lock
/// file cannot be read) that run is shown as recorded, `running`, without a pid: it may be.
pub(crate) fn read(
    conn: &mut Connection,
    writer: Option<&Writer>,
    writer_unknown: Option<String>,
    config: &Config,
) -> Result<Status> {
    let schema_version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current_run: i64 = if writer.is_some() || writer_unknown.is_some() {
        conn.query_row(
            "SELECT coalesce(max(run_id), 0) FROM run WHERE outcome = 'running'",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    let mut runs = runs_where(conn, current_run, "1", RECENT_RUNS)?;
    for run in runs.iter_mut().filter(|r| r.run_id == current_run) {
        run.pid = writer.map(|w| w.pid);
        run.progress = Some(conn.query_row(
            "SELECT (SELECT count(*) FROM staged_page WHERE run_id = ?1),
                    (SELECT count(*) FROM api_call WHERE run_id = ?1 AND path LIKE '/rest/%'),
                    (SELECT count(*) FROM push_outcome WHERE run_id = ?1)",
            [current_run],
            |r| {
                Ok(serde_json::json!({
                    "pages_staged": r.get::<_, i64>(0)?,
                    "rest_calls": r.get::<_, i64>(1)?,
                    "records_answered": r.get::<_, i64>(2)?,
                }))
            },
        )?);
    }
    let last_success = runs_where(
        conn,
        current_run,
        "command IN ('push', 'sync', 'demo') AND outcome IN ('done', 'done_with_rejects')",
        1,
    )?
    .pop();
    let lag = conn.query_row(LAG, [], |r| {
        Ok(Lag {
            newest_staged: r.get(0)?,
            newest_acknowledged: r.get(1)?,
        })
    })?;
    let mut staged = Vec::new();
    for spec in SPECS {
        // Both counts from indexes (tombstones have a partial one), not from the records.
        let (all, deleted): (i64, i64) = conn.query_row(
            &format!(
                "SELECT (SELECT count(*) FROM {table}),
                        (SELECT count(*) FROM {table} WHERE deleted_run IS NOT NULL)",
                table = spec.table
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let live = all - deleted;
        staged.push(StagedCount {
            entity_set: spec.entity_set.to_string(),
            live,
            deleted,
            pull_mode: crate::stage::pull_state(conn, spec.entity_set)?.map(|state| state.mode),
            has_modifiedon: spec.has_modifiedon(),
        });
    }
    // The export rows (and with them derived_opportunity) are brought up to date first.
    let plan = plan::load_counts(conn, config)?;
    let derived = Derived {
        opportunities: export_rows::total(conn, "opportunities")?,
        opportunities_with_account: export_rows::total(conn, "opportunities_with_account")?,
        contact_roles: export_rows::total(conn, "contact_roles")?,
    };
    let rejected_total =
        conn.query_row("SELECT count(*) FROM rejected_record", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT run_id, source, position, entity_set, reason FROM rejected_record
         ORDER BY rejected_id DESC LIMIT ?1",
    )?;
    let rejected_recent = stmt
        .query_map([RECENT_REJECTS as i64], |r| {
            Ok(RejectedRow {
                run_id: r.get(0)?,
                source: r.get(1)?,
                position: r.get(2)?,
                entity_set: r.get(3)?,
                reason: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    let pending = Object::ALL
        .iter()
        .map(|o| (o.name(), plan.counts(*o)))
        .collect();
    // A run interrupted is a failure too (SIGKILL, out of memory, the machine stopped).
    let last_errors = runs_where(
        conn,
        current_run,
        "outcome IN ('failed', 'usage_error', 'interrupted')",
        3,
    )?;
    let (problems, problems_total) = crate::problem::open(conn, RECENT_REJECTS)?;
    let marketo_sample = conn
        .query_row(
            "SELECT run_id, sampled_at, leads_asked, leads_missing, opportunities_asked,
                 opportunities_missing, companies_asked, companies_missing, roles_asked,
                 roles_missing, error
             FROM marketo_sample ORDER BY sample_id DESC LIMIT 1",
            [],
            |r| {
                Ok(Sample {
                    run_id: r.get(0)?,
                    sampled_at: r.get(1)?,
                    leads_asked: r.get(2)?,
                    leads_missing: r.get(3)?,
                    opportunities_asked: r.get(4)?,
                    opportunities_missing: r.get(5)?,
                    companies_asked: r.get(6)?,
                    companies_missing: r.get(7)?,
                    roles_asked: r.get(8)?,
                    roles_missing: r.get(9)?,
                    error: r.get(10)?,
                })
            },
        )
        .optional()?;
    Ok(Status {
        schema_version,
        writer: writer.cloned(),
        writer_unknown,
        runs,
        staged,
        derived,
        rejected_total,
        rejected_recent,
        pending,
        last_errors,
        last_success,
        lag,
        problems,
        problems_total,
        marketo_sample,
    })
}

/// The newest `limit` runs matching `filter` (a constant condition, never user input), which
/// reads their outcome as shown: a run still recorded `running` that is not `current_run` was
/// left so by a process that is gone, in a database no writing command opened since
/// (`run::start` closes those as interrupted), and is `interrupted`.
fn runs_where(
    conn: &Connection,
    current_run: i64,
    filter: &str,
    limit: usize,
) -> Result<Vec<RunRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT run_id, command, args, started_at, finished_at, outcome, exit_code, counts, message
         FROM (SELECT run_id, command, args, started_at, finished_at,
                      CASE WHEN outcome = 'running' AND run_id <> ?2 THEN 'interrupted'
                           ELSE outcome END AS outcome,
                      exit_code, counts, message
               FROM run)
         WHERE {filter} ORDER BY run_id DESC LIMIT ?1"
    ))?;
    let parse = |text: Option<String>| {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let runs = stmt
        .query_map([limit as i64, current_run], |r| {
            let outcome: String = r.get(5)?;
            let message: Option<String> = r.get(8)?;
            // Said for a run not closed yet as `run::start` would say it.
            let message = match outcome.as_str() {
                "interrupted" => message.or_else(|| Some(crate::run::INTERRUPTED.to_string())),
                _ => message,
            };
            Ok(RunRow {
                run_id: r.get(0)?,
                command: r.get(1)?,
                args: parse(r.get(2)?),
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                outcome,
                pid: None,
                progress: None,
                exit_code: r.get(6)?,
                counts: parse(r.get(7)?),
                message,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with `n` opportunities modified one second apart, all but the ten newest
    /// acknowledged by Marketo; returns the lag read from it and the thousands of steps reading
    /// it took.
    fn lag_of(n: u32) -> ((String, String), u64) {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'pull', '[]', 'now');",
        )
        .unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO opportunity (opportunityid, modifiedon, raw, source_file, staged_run, seen_run)
             SELECT printf('opp-%06d', i), strftime('%Y-%m-%dT%H:%M:%SZ', 1700000000 + i, 'unixepoch'),
                    '{}', 'opportunities.json', 1, 1 FROM n",
            [n],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO mkto_ack (object, key, payload, run_id, acked_at)
             SELECT 'opportunity', opportunityid, '{}', 1, 'now' FROM opportunity
             ORDER BY modifiedon DESC LIMIT -1 OFFSET 10;",
        )
        .unwrap();
        crate::db::steps_taken(&mut conn, |conn| {
            conn.query_row(LAG, [], |r| Ok((r.get(0).unwrap(), r.get(1).unwrap())))
                .unwrap()
        })
    }

    #[test]
    fn the_lag_reads_from_the_newest_opportunity_however_many_there_are() {
        let (lag, few) = lag_of(100);
        assert_eq!(
            lag,
            ("2023-11-14T22:15:00Z".into(), "2023-11-14T22:14:50Z".into())
        );
        let (lag, many) = lag_of(20_000);
        assert_eq!(
            lag,
            ("2023-11-15T03:46:40Z".into(), "2023-11-15T03:46:30Z".into())
        );
        assert!(
            many <= few + 5,
            "{many} thousand steps with 20,000 opportunities, {few} with 100"
        );
    }
}
