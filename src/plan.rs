//! Desired rows (the `mkto_*` export views) against what Marketo last acknowledged (`mkto_ack`)
//! -> operations per object: create, update, unchanged, delete, skip.
//!
//! `diff` is a pure function; `load` does the reading. Nothing here writes or calls Marketo.
//! Companies and leads are never deleted (Marketo's own practice for persons). An opportunity is
//! deleted only when it was deleted in Dynamics (a tombstone) and `on_opportunity_delete` is
//! `delete`; one that left scope is no longer updated, and neither are its roles. A role no
//! longer derived on an opportunity still in scope is deleted.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use rusqlite::Connection;
use serde::Serialize;

use serde_json::Value;

use crate::config::{Config, OnOpportunityDelete};
pub(crate) use crate::object::Object;
use crate::object::RoleKey;

/// Marketo's most records per call.
pub(crate) const MAX_BATCH_RECORDS: usize = 300;
/// Marketo's largest request body is 1 MB; keep a margin for the envelope.
pub(crate) const MAX_BATCH_BYTES: usize = 1_000_000 - 4_096;

/// A row of an export view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Desired {
    pub key: Option<String>,
    pub source_id: String,
    pub payload: Option<String>,
    pub skip_reason: Option<String>,
    /// Roles only: the key of the lead whose Marketo id the role needs.
    pub lead_key: Option<String>,
}

/// A row of `mkto_ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acked {
    pub key: String,
    pub payload: String,
    pub marketo_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    Create,
    Update,
    Unchanged,
    Delete,
    Skip,
}

/// One thing push would do (or not do) with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operation {
    pub object: Object,
    pub action: Action,
    pub key: Option<String>,
    pub source_id: Option<String>,
    /// The payload to send (create, update) or that was last acknowledged (delete).
    pub payload: Option<String>,
    pub reason: Option<String>,
    pub lead_key: Option<String>,
}

/// The operations for one object. `deletable` says whether an acknowledged key that is no
/// longer desired should be deleted in Marketo (otherwise it is left alone).
pub(crate) fn diff(
    object: Object,
    desired: Vec<Desired>,
    acked: &BTreeMap<String, Acked>,
    deletable: &dyn Fn(&str) -> bool,
) -> Vec<Operation> {
    let mut seen = BTreeSet::new();
    let mut operations = Vec::with_capacity(desired.len());
    for row in desired {
        if let Some(key) = &row.key {
            seen.insert(key.clone());
        }
        let oversized = row
            .payload
            .as_ref()
            .filter(|p| p.len() + 1 > MAX_BATCH_BYTES)
            .map(|p| too_large(p.len() + 1));
        let skip_reason = row.skip_reason.or(oversized);
        let action = match (&skip_reason, &row.key, &row.payload) {
            (Some(_), _, _) | (None, None, _) | (None, _, None) => Action::Skip,
            (None, Some(key), Some(payload)) => match acked.get(key) {
                None => Action::Create,
                Some(ack) if ack.payload == *payload => Action::Unchanged,
                Some(_) => Action::Update,
            },
        };
        let reason = match action {
            Action::Skip => Some(skip_reason.unwrap_or_else(|| "no key or payload".to_string())),
            _ => None,
        };
        operations.push(Operation {
            object,
            action,
            key: row.key,
            source_id: Some(row.source_id),
            payload: row.payload,
            reason,
            lead_key: row.lead_key,
        });
    }
    for (key, ack) in acked {
        if !seen.contains(key) && deletable(key) {
            operations.push(Operation {
                object,
                action: Action::Delete,
                key: Some(key.clone()),
                source_id: None,
                payload: Some(ack.payload.clone()),
                reason: None,
                lead_key: (object == Object::OpportunityRole)
                    .then(|| RoleKey::parse(key).map(|k| k.lead))
                    .flatten(),
            });
        }
    }
    operations
}

/// Why a record of `bytes` bytes is never sent: no batch can carry it.
pub(crate) fn too_large(bytes: usize) -> String {
    format!(
        "the record is {bytes} bytes: alone it is over Marketo's 1 MB request limit (shorten the long fields in Dynamics)"
    )
}

/// Every operation, in push order (sales persons, companies, leads, opportunities, roles;
/// deletes last).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub operations: Vec<Operation>,
}

/// Per object and action, how many records.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Counts {
    pub create: usize,
    pub update: usize,
    pub unchanged: usize,
    pub delete: usize,
    pub skip: usize,
}

impl Plan {
    pub(crate) fn counts(&self, object: Object) -> Counts {
        let mut counts = Counts::default();
        for op in self.operations.iter().filter(|op| op.object == object) {
            match op.action {
                Action::Create => counts.create += 1,
                Action::Update => counts.update += 1,
                Action::Unchanged => counts.unchanged += 1,
                Action::Delete => counts.delete += 1,
                Action::Skip => counts.skip += 1,
            }
        }
        counts
    }

    /// The operations of one object and kind: upserts (create and update) or deletes.
    pub(crate) fn of(&self, object: Object, deletes: bool) -> Vec<&Operation> {
        self.operations
            .iter()
            .filter(|op| op.object == object)
            .filter(|op| match op.action {
                Action::Create | Action::Update => !deletes,
                Action::Delete => deletes,
                Action::Unchanged | Action::Skip => false,
            })
            .collect()
    }

    pub(crate) fn skipped(&self) -> impl Iterator<Item = &Operation> {
        self.operations
            .iter()
            .filter(|op| op.action == Action::Skip)
    }

    /// The batches push would send, in push order: upserts by object, then role deletes, then
    /// opportunity deletes. Sizes are estimated from the payloads (push adds a role's leadId).
    pub(crate) fn batches(&self) -> Vec<Batch> {
        let kinds = Object::ALL
            .iter()
            .map(|o| (*o, false))
            .chain([(Object::OpportunityRole, true), (Object::Opportunity, true)]);
        let mut batches = Vec::new();
        for (object, deletes) in kinds {
            let sizes: Vec<usize> = self
                .of(object, deletes)
                .iter()
                .map(|op| op.payload.as_ref().map_or(64, |p| p.len() + 1))
                .collect();
            let mut start = 0;
            for records in batch_sizes(&sizes) {
                let bytes = sizes[start..start + records].iter().sum();
                start += records;
                batches.push(Batch {
                    object,
                    deletes,
                    records,
                    bytes,
                });
            }
        }
        batches
    }

    /// REST calls push needs for this plan (the identity call is free and not counted).
    pub(crate) fn calls(&self) -> BTreeMap<String, usize> {
        let mut calls = BTreeMap::new();
        for batch in self.batches() {
            let name = format!(
                "{}{}",
                batch.object.plural(),
                if batch.deletes { " delete" } else { "" }
            );
            *calls.entry(name).or_default() += 1;
        }
        calls
    }
}

/// One call's worth of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub object: Object,
    pub deletes: bool,
    pub records: usize,
    pub bytes: usize,
}

/// Splits records of the given serialized sizes into batches of at most `MAX_BATCH_RECORDS`
/// records and `MAX_BATCH_BYTES` bytes, in order; returns each batch's length.
pub(crate) fn batch_sizes(sizes: &[usize]) -> Vec<usize> {
    let mut batches = Vec::new();
    let (mut count, mut bytes) = (0, 0);
    for &size in sizes {
        if count > 0 && (count == MAX_BATCH_RECORDS || bytes + size > MAX_BATCH_BYTES) {
            batches.push(count);
            count = 0;
            bytes = 0;
        }
        count += 1;
        bytes += size;
    }
    if count > 0 {
        batches.push(count);
    }
    batches
}

/// Reads the views and the acknowledged state and builds the plan.
pub(crate) fn load(conn: &Connection, config: &Config) -> Result<Plan> {
    let on_delete = config.marketo.on_opportunity_delete;
    let deleted_opportunities: BTreeSet<String> = strings(
        conn,
        "SELECT opportunityid FROM opportunity WHERE deleted_run IS NOT NULL",
    )?;
    let in_scope: BTreeSet<String> = strings(conn, "SELECT key FROM mkto_opportunity")?;
    let delete_opportunities = on_delete == OnOpportunityDelete::Delete;
    let mut plan = Plan::default();
    for object in Object::ALL {
        let mapping = config.mapping.of(object);
        let desired =
            desired(conn, object, mapping).with_context(|| format!("reading {}", object.view()))?;
        let acked = acked(conn, object)?;
        let deletable = |key: &str| match object {
            Object::SalesPerson | Object::Company | Object::Lead => false,
            Object::Opportunity => delete_opportunities && deleted_opportunities.contains(key),
            Object::OpportunityRole => RoleKey::parse(key).is_some_and(|role| {
                in_scope.contains(&role.opportunity)
                    || (delete_opportunities && deleted_opportunities.contains(&role.opportunity))
            }),
        };
        plan.operations
            .extend(diff(object, desired, &acked, &deletable));
    }
    // Push order: every upsert by object, then role deletes, then opportunity deletes.
    let rank = |op: &Operation| match (op.action, op.object) {
        (Action::Delete, Object::OpportunityRole) => 10,
        (Action::Delete, _) => 11,
        (_, object) => object as usize,
    };
    plan.operations.sort_by_key(rank);
    Ok(plan)
}

fn strings(conn: &Connection, sql: &str) -> Result<BTreeSet<String>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The rows of an export view, with the `[mapping.*]` fields of the object merged into each
/// payload: read from the staged record's `raw` through a bound JSON path (never pasted into
/// SQL), sent as null when the record lacks the column. The views hold the default mapping.
fn desired(
    conn: &Connection,
    object: Object,
    mapping: &BTreeMap<String, String>,
) -> Result<Vec<Desired>> {
    let lead_key = if object == Object::OpportunityRole {
        "v.lead_key"
    } else {
        "NULL"
    };
    let (extra, join) = match object.source() {
        Some(source) if !mapping.is_empty() => (
            (1..=mapping.len())
                .map(|i| format!(", t.raw -> ?{i}"))
                .collect::<String>(),
            format!(
                "LEFT JOIN {} t ON t.{} = v.source_id",
                source.table, source.key
            ),
        ),
        _ => (String::new(), String::new()),
    };
    let sql = format!(
        "SELECT v.key, v.source_id, v.payload, v.skip_reason, {lead_key}{extra} FROM {} v {join} ORDER BY v.key, v.source_id",
        object.view()
    );
    let paths: Vec<String> = if join.is_empty() {
        Vec::new()
    } else {
        mapping
            .values()
            .map(|column| format!("$.\"{column}\""))
            .collect()
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(&paths), |r| {
            let mut payload: Option<String> = r.get(2)?;
            if let (Some(text), false) = (&payload, paths.is_empty()) {
                let mut fields: serde_json::Map<String, Value> =
                    serde_json::from_str(text).unwrap_or_default();
                for (i, field) in mapping.keys().enumerate() {
                    let value: Option<String> = r.get(5 + i)?;
                    let value = value
                        .and_then(|v| serde_json::from_str(&v).ok())
                        .unwrap_or(Value::Null);
                    fields.insert(field.clone(), value);
                }
                payload = Some(Value::Object(fields).to_string());
            }
            Ok(Desired {
                key: r.get(0)?,
                source_id: r.get(1)?,
                payload,
                skip_reason: r.get(3)?,
                lead_key: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn acked(conn: &Connection, object: Object) -> Result<BTreeMap<String, Acked>> {
    let mut stmt =
        conn.prepare("SELECT key, payload, marketo_id FROM mkto_ack WHERE object = ?1")?;
    let rows = stmt
        .query_map([object.name()], |r| {
            Ok(Acked {
                key: r.get(0)?,
                payload: r.get(1)?,
                marketo_id: r.get(2)?,
            })
        })?
        .map(|row| row.map(|ack| (ack.key.clone(), ack)))
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(key: &str, payload: &str) -> Desired {
        Desired {
            key: Some(key.into()),
            source_id: key.into(),
            payload: Some(payload.into()),
            skip_reason: None,
            lead_key: None,
        }
    }

    fn ack(key: &str, payload: &str) -> (String, Acked) {
        (
            key.into(),
            Acked {
                key: key.into(),
                payload: payload.into(),
                marketo_id: Some("1".into()),
            },
        )
    }

    fn actions(ops: &[Operation]) -> Vec<(Option<&str>, Action)> {
        ops.iter()
            .map(|op| (op.key.as_deref(), op.action))
            .collect()
    }

    #[test]
    fn diff_creates_updates_leaves_unchanged_and_deletes_only_what_it_may() {
        let acked = BTreeMap::from([
            ack("b", "{}"),
            ack("c", r#"{"x":1}"#),
            ack("gone", "{}"),
            ack("kept", "{}"),
        ]);
        let desired = vec![want("a", "{}"), want("b", "{}"), want("c", r#"{"x":2}"#)];
        let ops = diff(Object::Opportunity, desired, &acked, &|key| key == "gone");
        assert_eq!(
            actions(&ops),
            [
                (Some("a"), Action::Create),
                (Some("b"), Action::Unchanged),
                (Some("c"), Action::Update),
                (Some("gone"), Action::Delete)
            ]
        );
    }

    #[test]
    fn diff_skips_rows_with_a_reason_even_when_acknowledged() {
        let acked = BTreeMap::from([ack("a", "{}")]);
        let mut row = want("a", "{}");
        row.skip_reason = Some("opportunity has no name".into());
        let ops = diff(Object::Opportunity, vec![row], &acked, &|_| true);
        assert_eq!(actions(&ops), [(Some("a"), Action::Skip)]);
        assert_eq!(ops[0].reason.as_deref(), Some("opportunity has no name"));
    }

    #[test]
    fn a_deleted_role_carries_its_lead_key() {
        let key = r#"["opp","ana@example.com","Customer"]"#;
        let acked = BTreeMap::from([ack(key, "{}")]);
        let ops = diff(Object::OpportunityRole, vec![], &acked, &|_| true);
        assert_eq!(ops[0].lead_key.as_deref(), Some("ana@example.com"));
    }

    #[test]
    fn batches_hold_at_most_300_records_and_a_megabyte() {
        assert_eq!(batch_sizes(&[10; 301]), [300, 1]);
        assert_eq!(batch_sizes(&[400_000; 5]), [2, 2, 1]);
        assert_eq!(
            batch_sizes(&[2_000_000]),
            [1],
            "an oversized record still goes alone"
        );
        assert!(batch_sizes(&[]).is_empty());
    }
}
