//! Standing problems: the records that make a run exit 3, and since when (`problem` table).
//!
//! A scheduler must tell a new failure from an old one, so a run exits 3 only when it found a
//! new problem: a record rejected or not sent for the first time, or for a new reason. A
//! problem seen again is standing: its `last_run` moves on, `status` shows when it was first
//! seen, and the run exits 0. A problem a complete push no longer sees, or a pull problem whose
//! record a later pull staged, is closed.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::run::now;
use crate::stage::SPECS;

/// One problem a run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub subject: String,
    pub key: String,
    pub reason: String,
}

/// Records the problems a run saw at `stage` (`pull` or `push`) in one transaction; returns how
/// many are new (first seen, or seen with another reason than before).
pub(crate) fn record(
    conn: &mut Connection,
    run_id: i64,
    stage: &str,
    seen: &[Seen],
) -> Result<usize> {
    let tx = conn.transaction()?;
    let at = now();
    let mut new = 0;
    for problem in seen {
        let open: Option<(i64, String, i64)> = tx
            .prepare_cached(
                "SELECT problem_id, reason, last_run FROM problem
                 WHERE stage = ?1 AND subject = ?2 AND key = ?3 AND resolved_run IS NULL",
            )?
            .query_row(params![stage, problem.subject, problem.key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        match open {
            Some((id, reason, _)) if reason == problem.reason => {
                tx.prepare_cached(
                    "UPDATE problem SET last_run = ?2, last_seen = ?3 WHERE problem_id = ?1",
                )?
                .execute(params![id, run_id, at])?;
            }
            // Seen twice in this run (a lead folded from two contacts): not new again.
            Some((_, _, last_run)) if last_run == run_id => {}
            Some((id, _, _)) => {
                // The same record, another reason: the old problem is over, a new one starts.
                tx.prepare_cached("UPDATE problem SET resolved_run = ?2 WHERE problem_id = ?1")?
                    .execute(params![id, run_id])?;
                insert(&tx, run_id, stage, problem, &at)?;
                new += 1;
            }
            None => {
                insert(&tx, run_id, stage, problem, &at)?;
                new += 1;
            }
        }
    }
    tx.commit()?;
    Ok(new)
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    stage: &str,
    problem: &Seen,
    at: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO problem (stage, subject, key, reason, first_run, first_seen, last_run, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6)",
    )?
    .execute(params![stage, problem.subject, problem.key, problem.reason, run_id, at])?;
    Ok(())
}

/// Closes the open problems of `stage` this run did not see: for a push that went through
/// the whole plan, every record it did not report is fine now.
pub(crate) fn close_unseen(conn: &Connection, run_id: i64, stage: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE problem SET resolved_run = ?1
         WHERE stage = ?2 AND resolved_run IS NULL AND last_run <> ?1",
        params![run_id, stage],
    )?)
}

/// Closes the pull problems whose record this run staged (a later version came through).
/// Looked up per open problem by the table's primary key: a pull ends with this on every run,
/// and the staging tables (millions of rows) have no index on `staged_run`.
pub(crate) fn close_staged(conn: &Connection, run_id: i64) -> Result<usize> {
    let mut closed = 0;
    for spec in SPECS {
        closed += conn.execute(
            &format!(
                "UPDATE problem SET resolved_run = ?1
                 WHERE stage = 'pull' AND resolved_run IS NULL AND last_run <> ?1 AND subject = ?2
                   AND EXISTS (SELECT 1 FROM {table} t
                               WHERE t.{key} = problem.key AND t.staged_run = ?1)",
                key = spec.key,
                table = spec.table
            ),
            params![run_id, spec.entity_set],
        )?;
    }
    Ok(closed)
}

/// An open problem, as `status` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Open {
    pub stage: String,
    pub subject: String,
    pub key: String,
    pub reason: String,
    pub first_run: i64,
    pub first_seen: String,
    pub last_run: i64,
    pub last_seen: String,
}

/// The open problems, oldest first, at most `limit`; and how many there are in all.
pub(crate) fn open(conn: &Connection, limit: usize) -> Result<(Vec<Open>, i64)> {
    let total = conn.query_row(
        "SELECT count(*) FROM problem WHERE resolved_run IS NULL",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT stage, subject, key, reason, first_run, first_seen, last_run, last_seen
         FROM problem WHERE resolved_run IS NULL ORDER BY first_run, problem_id LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok(Open {
                stage: r.get(0)?,
                subject: r.get(1)?,
                key: r.get(2)?,
                reason: r.get(3)?,
                first_run: r.get(4)?,
                first_seen: r.get(5)?,
                last_run: r.get(6)?,
                last_seen: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        for run in 1..=4 {
            conn.execute(
                "INSERT INTO run (run_id, command, args, started_at) VALUES (?1, 'test', '[]', 'now')",
                [run],
            )
            .unwrap();
        }
        conn
    }

    fn seen(key: &str, reason: &str) -> Seen {
        Seen {
            subject: "lead".into(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn only_first_sightings_and_new_reasons_are_new_and_unseen_ones_close() {
        let mut conn = db();
        let a = seen("a", "contact has no email");
        let b = seen("b", "1003 Invalid value");
        assert_eq!(
            record(&mut conn, 1, "push", std::slice::from_ref(&a)).unwrap(),
            1
        );
        assert_eq!(
            record(&mut conn, 2, "push", std::slice::from_ref(&a)).unwrap(),
            0,
            "standing"
        );
        assert_eq!(
            record(&mut conn, 3, "push", &[a.clone(), b.clone()]).unwrap(),
            1,
            "b is new"
        );
        let changed = seen("b", "1006 Field not found");
        assert_eq!(
            record(&mut conn, 4, "push", &[a, changed]).unwrap(),
            1,
            "new reason"
        );
        let (open, total) = open(&conn, 10).unwrap();
        assert_eq!(total, 2);
        assert_eq!((open[0].key.as_str(), open[0].first_run), ("a", 1));
        assert_eq!(open[1].reason, "1006 Field not found");
        assert_eq!(close_unseen(&conn, 4, "push").unwrap(), 0);
        conn.execute(
            "INSERT INTO run (run_id, command, args, started_at) VALUES (5, 't', '[]', 'now')",
            [],
        )
        .unwrap();
        record(&mut conn, 5, "push", &[seen("a", "contact has no email")]).unwrap();
        assert_eq!(close_unseen(&conn, 5, "push").unwrap(), 1, "b was sent");
        assert_eq!(super::open(&conn, 10).unwrap().1, 1);
    }
}
