//! Staging: merge semantics, tombstones, rejects and the `--full` sweep.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::*;
use crate::source::page;

fn db() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::db::configure(&conn).unwrap();
    crate::db::migrate(&mut conn).unwrap();
    for run in 1..=3 {
        conn.execute(
            "INSERT INTO run (run_id, command, args, started_at) VALUES (?1, 'test', '[]', 'now')",
            [run],
        )
        .unwrap();
    }
    conn
}

fn stage(conn: &mut Connection, run: i64, file: &str, text: &str) -> PageReport {
    let parsed = page::parse(file, text, Some(file)).unwrap();
    stage_page(conn, run, file, &parsed).unwrap()
}

fn one(conn: &Connection, sql: &str) -> Option<String> {
    let value: rusqlite::types::Value = conn.query_row(sql, [], |r| r.get(0)).unwrap();
    match value {
        rusqlite::types::Value::Null => None,
        rusqlite::types::Value::Integer(n) => Some(n.to_string()),
        rusqlite::types::Value::Text(t) => Some(t),
        other => Some(format!("{other:?}")),
    }
}

#[test]
fn a_narrower_page_keeps_the_columns_it_does_not_carry() {
    let mut conn = db();
    stage(
        &mut conn,
        1,
        "opportunities.json",
        r#"{"value": [{"opportunityid": "AB000000-0000-4000-8000-0000000000CD", "name": "A", "_customerid_value": "CD000000-0000-4000-8000-0000000000EF",
        "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact"}]}"#,
    );
    stage(
        &mut conn,
        2,
        "opportunities.json",
        r#"{"value": [{"opportunityid": "ab000000-0000-4000-8000-0000000000cd", "name": "B"}]}"#,
    );
    assert_eq!(
        one(
            &conn,
            "SELECT name || ' ' || customerid || ' ' || customerid_type FROM opportunity"
        )
        .unwrap(),
        "B cd000000-0000-4000-8000-0000000000ef contact"
    );
    assert_eq!(
        one(&conn, "SELECT raw FROM opportunity").unwrap(),
        r#"{"opportunityid": "ab000000-0000-4000-8000-0000000000cd", "name": "B"}"#
    );
}

#[test]
fn a_null_value_clears_the_column_and_its_annotation() {
    let mut conn = db();
    stage(
        &mut conn,
        1,
        "opportunities.json",
        r#"{"value": [{"opportunityid": "ab000000-0000-4000-8000-0000000000cd", "_customerid_value": "cd000000-0000-4000-8000-0000000000ef",
        "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact"}]}"#,
    );
    stage(
        &mut conn,
        2,
        "opportunities.json",
        r#"{"value": [{"opportunityid": "ab000000-0000-4000-8000-0000000000cd", "_customerid_value": null}]}"#,
    );
    assert_eq!(
        one(
            &conn,
            "SELECT coalesce(customerid, customerid_type, 'cleared') FROM opportunity"
        )
        .unwrap(),
        "cleared"
    );
}

#[test]
fn a_delete_tombstones_and_a_later_upsert_revives() {
    let mut conn = db();
    stage(
        &mut conn,
        1,
        "accounts.json",
        r#"{"value": [{"accountid": "{aa000000-0000-4000-8000-000000000001}", "name": "Kept"}]}"#,
    );
    let report = stage(
        &mut conn,
        2,
        "accounts.json",
        r#"{"value": [{"@odata.context": "https://x/$metadata#accounts/$deletedEntity", "id": "{aa000000-0000-4000-8000-000000000001}", "reason": "deleted"}]}"#,
    );
    assert_eq!(report.counts.deleted, 1);
    assert_eq!(
        one(
            &conn,
            "SELECT name || ' ' || deleted_run || ' ' || deleted_reason FROM account"
        )
        .unwrap(),
        "Kept 2 deleted"
    );
    stage(
        &mut conn,
        3,
        "accounts.json",
        r#"{"value": [{"accountid": "{aa000000-0000-4000-8000-000000000001}", "name": "Back"}]}"#,
    );
    assert_eq!(
        one(
            &conn,
            "SELECT name || ' ' || coalesce(deleted_run, 'live') FROM account"
        )
        .unwrap(),
        "Back live"
    );
}

#[test]
fn dates_accept_a_date_or_a_timestamp_and_keep_the_date() {
    let mut conn = db();
    stage(
        &mut conn,
        1,
        "opportunities.json",
        r#"{"value": [
        {"opportunityid": "0f000000-0000-4000-8000-000000000001", "estimatedclosedate": "2025-06-30"},
        {"opportunityid": "0f000000-0000-4000-8000-000000000002", "estimatedclosedate": "2025-06-30T00:00:00Z"},
        {"opportunityid": "0f000000-0000-4000-8000-000000000003", "estimatedclosedate": "2025-02-30"}]}"#,
    );
    assert_eq!(
        one(
            &conn,
            "SELECT group_concat(estimatedclosedate, ',') FROM opportunity"
        )
        .unwrap(),
        "2025-06-30,2025-06-30"
    );
    assert_eq!(
        one(&conn, "SELECT reason FROM rejected_record").unwrap(),
        r#"estimatedclosedate: expected a date (YYYY-MM-DD or an ISO 8601 timestamp), got string "2025-02-30""#
    );
}

#[test]
fn integers_sent_as_whole_floats_are_accepted_and_fractions_rejected() {
    let mut conn = db();
    let report = stage(
        &mut conn,
        1,
        "opportunities.json",
        r#"{"value": [
        {"opportunityid": "0f000000-0000-4000-8000-000000000001", "closeprobability": 60.0}, {"opportunityid": "0f000000-0000-4000-8000-000000000002", "closeprobability": 60.5}]}"#,
    );
    assert_eq!((report.counts.upserted, report.counts.rejected), (1, 1));
    assert_eq!(
        one(&conn, "SELECT closeprobability FROM opportunity").unwrap(),
        "60"
    );
}

#[test]
fn full_sweep_tombstones_only_unseen_records_of_pulled_sets() {
    let mut conn = db();
    stage(
        &mut conn,
        1,
        "accounts.json",
        r#"{"value": [{"accountid": "0a000000-0000-4000-8000-000000000001"}, {"accountid": "0a000000-0000-4000-8000-000000000002"}]}"#,
    );
    stage(
        &mut conn,
        1,
        "contacts.json",
        r#"{"value": [{"contactid": "0c000000-0000-4000-8000-000000000001"}]}"#,
    );
    stage(
        &mut conn,
        2,
        "accounts.json",
        r#"{"value": [{"accountid": "0a000000-0000-4000-8000-000000000001"}]}"#,
    );
    let swept = sweep_missing(&mut conn, 2, &BTreeSet::from(["accounts"])).unwrap();
    assert_eq!(swept, [("accounts", 1)]);
    assert_eq!(
        one(
            &conn,
            "SELECT accountid FROM account WHERE deleted_reason = 'missing from full pull'"
        )
        .unwrap(),
        "0a000000-0000-4000-8000-000000000002"
    );
    assert_eq!(
        one(
            &conn,
            "SELECT count(*) FROM contact WHERE deleted_run IS NULL"
        )
        .unwrap(),
        "1"
    );
}

#[test]
fn every_spec_column_exists_in_its_table() {
    let conn = db();
    for spec in SPECS {
        let columns = crate::db::texts(
            &conn,
            "SELECT name FROM pragma_table_info(?1)",
            [spec.table],
        );
        for column in spec.columns.iter().map(|c| c.column).chain([spec.key]) {
            assert!(
                columns.iter().any(|c| c == column),
                "{}.{column} is missing from the schema",
                spec.table
            );
        }
    }
}

#[test]
fn keys_and_lookups_must_be_guids_and_are_stored_bare_and_lower_case() {
    let mut conn = db();
    let report = stage(
        &mut conn,
        1,
        "opportunities.json",
        r#"{"value": [
        {"opportunityid": "{0F000000-0000-4000-8000-00000000000A}", "_parentaccountid_value": "{0A000000-0000-4000-8000-0000000000AB}"},
        {"opportunityid": "not-a-guid"},
        {"opportunityid": "x'); DROP TABLE opportunity; --"},
        {"opportunityid": "0f000000-0000-4000-8000-00000000000\u0000"},
        {"opportunityid": " 0f000000-0000-4000-8000-00000000000b"},
        {"opportunityid": "0f000000-0000-4000-8000-00000000000c", "_customerid_value": "C"}]}"#,
    );
    assert_eq!((report.counts.upserted, report.counts.rejected), (1, 5));
    assert_eq!(
        one(
            &conn,
            "SELECT opportunityid || ' ' || parentaccountid FROM opportunity"
        )
        .unwrap(),
        "0f000000-0000-4000-8000-00000000000a 0a000000-0000-4000-8000-0000000000ab"
    );
    let reasons = one(
        &conn,
        "SELECT group_concat(reason, ' | ') FROM (SELECT reason FROM rejected_record ORDER BY position)",
    )
    .unwrap();
    assert_eq!(
        reasons.matches("opportunityid: expected a GUID").count(),
        4,
        "{reasons}"
    );
    assert!(
        reasons.contains(r#"_customerid_value: expected a GUID, got string "C""#),
        "{reasons}"
    );
}

#[test]
fn a_record_with_a_duplicate_key_is_rejected_naming_the_key() {
    let mut conn = db();
    let report = stage(
        &mut conn,
        1,
        "accounts.json",
        r#"{"value": [
        {"accountid": "0a000000-0000-4000-8000-000000000001", "name": "First", "name": "Second"},
        {"accountid": "0a000000-0000-4000-8000-000000000002", "name": "Fine"}]}"#,
    );
    assert_eq!((report.counts.upserted, report.counts.rejected), (1, 1));
    let reason = one(&conn, "SELECT reason FROM rejected_record").unwrap();
    assert!(reason.contains("`name` appears twice"), "{reason}");
    assert_eq!(one(&conn, "SELECT name FROM account").unwrap(), "Fine");
}

/// Generated columns an index reads, with the typed column each is computed from.
const GENERATED: &[(&str, &str, &str)] = &[("contact", "email_key", "emailaddress1")];

#[test]
fn each_specs_indexed_columns_are_the_ones_its_tables_indexes_read() {
    let conn = db();
    for spec in SPECS {
        let generated = crate::db::texts(
            &conn,
            "SELECT name FROM pragma_table_xinfo(?1) WHERE hidden IN (2, 3)",
            [spec.table],
        );
        for name in &generated {
            assert!(
                GENERATED
                    .iter()
                    .any(|(t, g, _)| *t == spec.table && g == name),
                "{}.{name} is generated: say what it is computed from in GENERATED",
                spec.table
            );
        }
        let mut read = BTreeSet::new();
        let indexes = crate::db::texts(
            &conn,
            "SELECT name FROM pragma_index_list(?1)",
            [spec.table],
        );
        for index in &indexes {
            let sql = crate::db::texts(
                &conn,
                "SELECT sql FROM sqlite_master WHERE name = ?1 AND sql IS NOT NULL",
                [index],
            );
            if let Some((_, filter)) = sql.first().and_then(|sql| sql.split_once(" WHERE ")) {
                // Only a tombstone moves a record in or out of a partial index, and a new
                // version of a live record never assigns `deleted_run`.
                assert_eq!(filter, "deleted_run IS NOT NULL", "{index}");
            }
            for column in crate::db::texts(&conn, "SELECT name FROM pragma_index_info(?1)", [index])
            {
                let column = GENERATED
                    .iter()
                    .find(|(t, g, _)| *t == spec.table && *g == column)
                    .map_or(column.as_str(), |(_, _, from)| from)
                    .to_string();
                if column != spec.key && column != "deleted_run" {
                    read.insert(column);
                }
            }
        }
        let listed: BTreeSet<String> = spec.indexed.iter().map(|c| c.to_string()).collect();
        assert_eq!(listed, read, "the indexed columns of {}", spec.table);
    }
}
