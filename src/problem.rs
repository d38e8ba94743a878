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

use crate::object::Object;
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
    Ok(record_each(conn, run_id, stage, seen)?
        .into_iter()
        .filter(|new| *new)
        .count())
}

/// `record`, saying for each problem seen whether it is new.
pub(crate) fn record_each(
    conn: &mut Connection,
    run_id: i64,
    stage: &str,
    seen: &[Seen],
) -> Result<Vec<bool>> {
    let tx = conn.transaction()?;
    let at = now();
    let mut new = Vec::with_capacity(seen.len());
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
        let is_new = match open {
            Some((id, reason, _)) if reason == problem.reason => {
                tx.prepare_cached(
                    "UPDATE problem SET last_run = ?2, last_seen = ?3 WHERE problem_id = ?1",
                )?
                .execute(params![id, run_id, at])?;
                false
            }
            // Seen twice in this run (a lead folded from two contacts): not new again.
            Some((_, _, last_run)) if last_run == run_id => false,
            Some((id, _, _)) => {
                // The same record, another reason: the old problem is over, a new one starts.
                tx.prepare_cached("UPDATE problem SET resolved_run = ?2 WHERE problem_id = ?1")?
                    .execute(params![id, run_id])?;
                insert(&tx, run_id, stage, problem, &at)?;
                true
            }
            None => {
                insert(&tx, run_id, stage, problem, &at)?;
                true
            }
        };
        new.push(is_new);
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
/// the whole plan, every record it did not report is fine now. The problems of records the
/// plan cannot send are not seen by a push but kept by `check_unsendable`.
pub(crate) fn close_unseen(conn: &Connection, run_id: i64, stage: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE problem SET resolved_run = ?1
         WHERE stage = ?2 AND resolved_run IS NULL AND last_run <> ?1 AND root IS NULL",
        params![run_id, stage],
    )?)
}

/// A record the plan cannot send, first seen by this run (or with a new reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsendable {
    pub object: &'static str,
    pub key: Option<String>,
    pub source_id: String,
    pub reason: String,
}

/// Brings the problems of records the plan cannot send (`export_rows::unsendable`) in step with
/// the export rows, for the roots a refresh changed since the last check (`export_skip_root`),
/// or for every root after a full evaluation: a problem whose row is no longer skipped with its
/// reason closes, a skipped row without an open problem opens one, with a `push_outcome` row
/// saying why it was not sent. The rest stand as they are, read by no one, so that a push costs
/// what changed and not how many records cannot be sent. Returns the new ones, at most `listed`
/// of them, and how many there are.
pub(crate) fn check_unsendable(
    conn: &mut Connection,
    run_id: i64,
    listed: usize,
) -> Result<(Vec<Unsendable>, usize)> {
    let tx = conn.transaction()?;
    let every_root: bool = tx.query_row(
        "SELECT NOT skips_checked FROM main.export_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    let skipped = crate::export_rows::unsendable("e");
    let rows = if every_root {
        format!("main.export_row e WHERE {skipped}")
    } else {
        format!(
            "main.export_skip_root t CROSS JOIN main.export_row e
                 ON e.object = t.object AND e.root = t.root
             WHERE {skipped}"
        )
    };
    // The problems checked: every one of a record the plan cannot send, or those of the roots
    // that changed.
    let checked = if every_root {
        "main.problem p WHERE p.root IS NOT NULL"
    } else {
        "main.export_skip_root t CROSS JOIN main.problem p
             ON p.subject = t.object AND p.root = t.root WHERE p.root IS NOT NULL"
    };
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE skip_now AS
         SELECT e.object, coalesce(e.key, e.source_id) AS problem_key, e.key, e.source_id, e.root,
             coalesce(e.skip_reason, 'no key or payload') AS reason
         FROM {rows};
         CREATE INDEX temp.skip_now_by_key ON skip_now (object, problem_key);"
    ))?;
    let at = now();
    // Closed: a problem whose row is gone or sendable now, and any open problem of a skipped
    // record that stood for another reason (a record Marketo refused before, say).
    let standing = "EXISTS (SELECT 1 FROM temp.skip_now n
        WHERE n.object = p.subject AND n.problem_key = p.key AND n.reason = p.reason)";
    tx.execute(
        &format!(
            "UPDATE main.problem SET resolved_run = ?1 WHERE problem_id IN (
                 SELECT p.problem_id FROM {checked}
                     AND p.stage = 'push' AND p.resolved_run IS NULL AND NOT {standing}
                 UNION
                 SELECT p.problem_id FROM temp.skip_now s CROSS JOIN main.problem p
                     ON p.stage = 'push' AND p.subject = s.object AND p.key = s.problem_key
                     AND p.resolved_run IS NULL
                 WHERE NOT {standing})"
        ),
        [run_id],
    )?;
    // Standing with the same reason: it now stands for this root (a problem from before
    // migration 0012 had none; a role whose connection moved has another).
    // Found from the rows checked: an UPDATE ... FROM would walk every open problem.
    tx.execute(
        "UPDATE main.problem SET root = (
             SELECT min(s.root) FROM temp.skip_now s
             WHERE s.object = problem.subject AND s.problem_key = problem.key
               AND s.reason = problem.reason)
         WHERE problem_id IN (
             SELECT p.problem_id FROM temp.skip_now s CROSS JOIN main.problem p
                 ON p.stage = 'push' AND p.subject = s.object AND p.key = s.problem_key
                 AND p.resolved_run IS NULL
             WHERE p.reason = s.reason AND p.root IS NOT s.root)",
        [],
    )?;
    // New: one problem per record (two rows without a key may share a source id).
    tx.execute_batch(
        "CREATE TEMP TABLE skip_new AS
         SELECT s.object, s.problem_key, min(s.key) AS key, min(s.source_id) AS source_id,
             min(s.root) AS root, min(s.reason) AS reason
         FROM temp.skip_now s
         WHERE NOT EXISTS (SELECT 1 FROM main.problem p
             WHERE p.stage = 'push' AND p.subject = s.object AND p.key = s.problem_key
               AND p.resolved_run IS NULL)
         GROUP BY s.object, s.problem_key;",
    )?;
    let new = tx.execute(
        "INSERT INTO main.problem
             (stage, subject, key, reason, first_run, first_seen, last_run, last_seen, root)
         SELECT 'push', object, problem_key, reason, ?1, ?2, ?1, ?2, root FROM temp.skip_new",
        params![run_id, at],
    )?;
    let mut first = Vec::new();
    {
        let mut rows =
            tx.prepare("SELECT object, problem_key, key, source_id, reason FROM temp.skip_new")?;
        let mut outcome = tx.prepare(
            "INSERT INTO main.push_outcome (run_id, object, key, action, status, reasons, at)
             VALUES (?1, ?2, ?3, 'skip', 'not_sent', ?4, ?5)",
        )?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let object: String = row.get(0)?;
            let problem_key: String = row.get(1)?;
            let reason: String = row.get(4)?;
            let reasons = crate::redact::json(&serde_json::json!([{ "message": reason }]));
            outcome.execute(params![run_id, object, problem_key, reasons, at])?;
            if first.len() < listed {
                first.push(Unsendable {
                    object: Object::from_name(&object).map_or("?", Object::name),
                    key: row.get(2)?,
                    source_id: row.get(3)?,
                    reason,
                });
            }
        }
    }
    tx.execute_batch(
        "DROP TABLE temp.skip_now;
         DROP TABLE temp.skip_new;
         DELETE FROM main.export_skip_root;
         UPDATE main.export_state SET skips_checked = 1 WHERE id = 1;",
    )?;
    tx.commit()?;
    Ok((first, new))
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
    /// A record the plan cannot send: checked again only when a pull changes its records, so
    /// `last_run` is the push that last checked it, not the last one it stood through.
    pub unsendable: bool,
}

/// The open problems, oldest first, at most `limit`; and how many there are in all.
pub(crate) fn open(conn: &Connection, limit: usize) -> Result<(Vec<Open>, i64)> {
    let total = conn.query_row(
        "SELECT count(*) FROM problem WHERE resolved_run IS NULL",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT stage, subject, key, reason, first_run, first_seen, last_run, last_seen,
             root IS NOT NULL
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
                unsendable: r.get(8)?,
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

    #[test]
    fn unsendable_problems_follow_the_export_rows_and_adopt_those_recorded_before_0012() {
        let mut conn = db();
        // Recorded by a push before migration 0012: no root; one stands, one was mended since.
        for (key, reason) in [
            ("c1", "contact has no email"),
            ("c9", "contact has no email"),
        ] {
            conn.execute(
                "INSERT INTO problem (stage, subject, key, reason, first_run, first_seen, last_run, last_seen)
                 VALUES ('push', 'lead', ?1, ?2, 1, 'then', 1, 'then')",
                [key, reason],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO export_row (object, root, key, source_id, payload, skip_reason) VALUES
                 ('lead', 'c1', NULL, 'c1', NULL, 'contact has no email'),
                 ('lead', 'c2', NULL, 'c2', NULL, 'contact has no email'),
                 ('lead', 'a@example.com', 'a@example.com', 'c3', '{}', NULL);",
        )
        .unwrap();
        let open_keys = |conn: &Connection| -> Vec<(String, Option<String>)> {
            conn.prepare("SELECT key, root FROM problem WHERE resolved_run IS NULL ORDER BY key")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        // Every root is checked once: c1 stands (adopted, not new), c2 is new, c9 is left to
        // the push's close_unseen.
        let (listed, new) = check_unsendable(&mut conn, 2, 10).unwrap();
        assert_eq!(new, 1);
        assert_eq!(listed[0].source_id, "c2");
        assert_eq!(
            open_keys(&conn),
            [
                ("c1".into(), Some("c1".into())),
                ("c2".into(), Some("c2".into())),
                ("c9".into(), None)
            ]
        );
        assert_eq!(close_unseen(&conn, 2, "push").unwrap(), 1, "c9");
        // Nothing changed: nothing is read, nothing is new.
        assert_eq!(check_unsendable(&mut conn, 3, 10).unwrap().1, 0);
        // c2 given an email (its row replaced, its root noted by the refresh), and c3 losing
        // its: c2's problem closes, c3's opens; c1's stands untouched.
        conn.execute_batch(
            "DELETE FROM export_row WHERE root IN ('c2', 'a@example.com');
             INSERT INTO export_row (object, root, key, source_id, payload, skip_reason) VALUES
                 ('lead', 'b@example.com', 'b@example.com', 'c2', '{}', NULL),
                 ('lead', 'c3', NULL, 'c3', NULL, 'contact has no email');
             INSERT INTO export_skip_root (object, root) VALUES ('lead', 'c2'), ('lead', 'c3');",
        )
        .unwrap();
        let (listed, new) = check_unsendable(&mut conn, 4, 10).unwrap();
        assert_eq!((new, listed[0].source_id.as_str()), (1, "c3"));
        assert_eq!(
            open_keys(&conn),
            [
                ("c1".into(), Some("c1".into())),
                ("c3".into(), Some("c3".into()))
            ]
        );
        let c1_last_run: i64 = conn
            .query_row("SELECT last_run FROM problem WHERE key = 'c1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(c1_last_run, 1, "standing, not read again");
    }
}
