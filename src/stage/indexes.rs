//! The staging tables' lookup indexes, set aside while a pull fills tables that were empty.
//!
//! A first pull inserts every record of the org, and a real org's ids (and the customers,
//! parents, owners and connection sides that point at them) come in no order: each insert into
//! an index keyed by them lands on a leaf of its own, so a page of 5,000 records rewrites
//! thousands of leaves, which the WAL writes and the checkpoint copies again. The rules and the
//! refresh need those indexes only once the records are staged, so a pull about to stage the
//! first page of a table that is empty drops them, notes them in `staging_index_aside`, and
//! builds them after its last page, from one sort each. Unique indexes stay: they are the
//! upsert's constraint. Tables a pull stages nothing into are left alone.
//!
//! A pull stopped midway leaves the indexes aside; whatever stages next keeps filling without
//! them, and the next refresh of the export rows builds them (every writing command refreshes
//! before it reads the rules). Read-only commands read the same rows without them, only slower.

use std::time::Instant;

use anyhow::{Context, Result};
use rusqlite::{Connection, TransactionBehavior};

use crate::db::text_pairs;

/// Drops the non-unique indexes of `table` when it holds no record, noting each in
/// `staging_index_aside`, in one transaction. Returns how many it set aside.
pub(crate) fn set_aside_if_empty(conn: &mut Connection, table: &str) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let empty: bool = tx.query_row(
        &format!("SELECT NOT EXISTS (SELECT 1 FROM main.\"{table}\")"),
        [],
        |r| r.get(0),
    )?;
    if !empty {
        return Ok(0);
    }
    let aside = text_pairs(
        &tx,
        "SELECT m.name, m.sql FROM main.sqlite_master m
         JOIN pragma_index_list(?1, 'main') l ON l.name = m.name
         WHERE m.type = 'index' AND m.sql IS NOT NULL AND l.\"unique\" = 0
         ORDER BY m.name",
        [table],
    )?;
    for (name, sql) in &aside {
        tx.execute(
            "INSERT INTO main.staging_index_aside (name, sql) VALUES (?1, ?2)",
            [name, sql],
        )?;
        tx.execute_batch(&format!("DROP INDEX main.\"{name}\";"))?;
    }
    tx.commit()
        .with_context(|| format!("setting aside the indexes of {table}, empty"))?;
    Ok(aside.len())
}

/// Builds the indexes `set_aside_if_empty` dropped, in one transaction, and reports it under
/// `-v`. Returns how many it built (0, at once, when none is aside).
pub(crate) fn build_set_aside(conn: &mut Connection) -> Result<usize> {
    let started = Instant::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let aside = text_pairs(
        &tx,
        "SELECT name, sql FROM main.staging_index_aside ORDER BY name",
        [],
    )?;
    if aside.is_empty() {
        return Ok(0);
    }
    crate::stop::interruptible("building the staging indexes set aside", || {
        for (name, sql) in &aside {
            tx.execute_batch(sql)
                .with_context(|| format!("building the staging index {name} set aside"))?;
        }
        Ok(())
    })?;
    tx.execute("DELETE FROM main.staging_index_aside", [])?;
    tx.commit()
        .context("storing the staging indexes set aside")?;
    crate::progress::detail(&format!(
        "built the {} indexes of the staging tables set aside while they filled in {} ms",
        aside.len(),
        started.elapsed().as_millis()
    ));
    Ok(aside.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::SPECS;

    /// (table, name, sql) of every index of the staging tables, in name order; '' for the
    /// SQL of the indexes SQLite makes for a primary key or a UNIQUE column.
    fn staging_indexes(conn: &Connection) -> Vec<(String, String, String)> {
        let tables: Vec<&str> = SPECS.iter().map(|spec| spec.table).collect();
        let mut stmt = conn
            .prepare(
                "SELECT tbl_name, name, coalesce(sql, '') FROM sqlite_master
                 WHERE type = 'index' ORDER BY name",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .filter(|(table, _, _): &(String, String, String)| tables.contains(&table.as_str()))
            .collect()
    }

    #[test]
    fn empty_tables_lose_their_lookup_indexes_until_built_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let before = staging_indexes(&conn);
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'test', '[]', 'now');
             INSERT INTO account (accountid, raw, source_file, staged_run, seen_run)
             VALUES ('a1', '{}', 'accounts.json', 1, 1);",
        )
        .unwrap();
        let set_aside = SPECS
            .iter()
            .map(|spec| set_aside_if_empty(&mut conn, spec.table).unwrap())
            .sum::<usize>();
        // What stays: the filled table's indexes, and every table's primary key.
        let kept: Vec<_> = before
            .iter()
            .filter(|(table, _, sql)| table == "account" || sql.is_empty())
            .cloned()
            .collect();
        assert_eq!(staging_indexes(&conn), kept);
        assert!(kept.iter().any(|(_, name, _)| name == "account_by_owner"));
        assert_eq!(set_aside, before.len() - kept.len());
        assert!(set_aside >= 10, "{set_aside}");
        let noted: i64 = conn
            .query_row("SELECT count(*) FROM staging_index_aside", [], |r| r.get(0))
            .unwrap();
        assert_eq!(noted as usize, set_aside);
        // Again: nothing more to drop, and what is aside stays noted.
        assert_eq!(set_aside_if_empty(&mut conn, "opportunity").unwrap(), 0);
        assert_eq!(set_aside_if_empty(&mut conn, "account").unwrap(), 0);
        assert_eq!(build_set_aside(&mut conn).unwrap(), set_aside);
        assert_eq!(staging_indexes(&conn), before);
        assert_eq!(build_set_aside(&mut conn).unwrap(), 0);
    }

    #[test]
    fn migration_0018_widens_the_owner_indexes_also_when_a_stopped_pull_set_one_aside() {
        let mut fresh = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut fresh).unwrap();
        let after = staging_indexes(&fresh);
        // A database as migration 0017 left it, a first pull stopped midway: the opportunities'
        // lookup indexes aside, with the owner index as 0004 defined it, the accounts' in place.
        let before_0018 = crate::sql::MIGRATIONS
            .iter()
            .position(|m| m.path.contains("0018_"))
            .unwrap();
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in &crate::sql::MIGRATIONS[..before_0018] {
            conn.execute_batch(migration.text).unwrap();
        }
        conn.execute_batch(
            "DROP INDEX opportunity_by_owner;
             DROP INDEX opportunity_by_customer;
             INSERT INTO staging_index_aside (name, sql) VALUES
                 ('opportunity_by_owner', 'CREATE INDEX opportunity_by_owner ON opportunity (ownerid)'),
                 ('opportunity_by_customer', 'CREATE INDEX opportunity_by_customer ON opportunity (customerid)');",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", before_0018)
            .unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let owner_index = |table: &str| -> String {
            conn.query_row(
                "SELECT sql FROM sqlite_master WHERE name = ?1",
                [format!("{table}_by_owner")],
                |r| r.get(0),
            )
            .unwrap()
        };
        for table in ["opportunity", "account", "contact"] {
            assert!(owner_index(table).ends_with("(ownerid, ownerid_type)"));
        }
        let aside = text_pairs(&conn, "SELECT name, sql FROM staging_index_aside", []).unwrap();
        assert_eq!(
            aside,
            [(
                "opportunity_by_customer".to_string(),
                "CREATE INDEX opportunity_by_customer ON opportunity (customerid)".to_string()
            )]
        );
        assert_eq!(build_set_aside(&mut conn).unwrap(), 1);
        assert_eq!(staging_indexes(&conn), after);
    }
}
