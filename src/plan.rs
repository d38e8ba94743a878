//! What push would do: the export rows (`export_row`, the `mkto_*` views materialized by
//! `export_rows`) against what Marketo last acknowledged (`mkto_ack`), as operations per
//! object: create, update, unchanged, delete, skip.
//!
//! The diff is SQL over indexed columns: a row is to send when `pending` (its payload is not the
//! acknowledged one), unchanged otherwise; skipped when the view gives a reason or it cannot be
//! carried. The plan holds the counts, the records over the request limit, the deletes and the
//! batch sizes; the other skipped records are counted, and listed from the export rows when
//! asked (`each_skipped`), as an org may hold hundreds of thousands of them;
//! the records to send are read in rowid order (the order a full evaluation stores them in, which
//! `export_row_pending` keeps), a chunk at a time (`upserts`), so neither plan nor push holds the
//! org in memory. It also says which objects push must describe first: those without a
//! describe stored within `describe_max_age_hours` that passes their fields (`export::describe`),
//! counted among the calls. Nothing here calls Marketo.
//!
//! Companies and leads are never deleted (Marketo's own practice for persons). An opportunity is
//! deleted only when it was deleted in Dynamics (a tombstone) and `on_opportunity_delete` is
//! `delete`; one that left scope is no longer updated, and neither are its roles. A role no
//! longer derived on an opportunity still in scope is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use rusqlite::{Connection, MAIN_DB, params};
use serde::Serialize;

use crate::config::{Config, OnOpportunityDelete};
use crate::export::describe;
use crate::export_rows::{self, Refreshed};
pub(crate) use crate::object::Object;
use crate::object::RoleKey;

/// Marketo's most records per call.
pub(crate) const MAX_BATCH_RECORDS: usize = 300;
/// Marketo's largest request body is 1 MB; keep a margin for the envelope.
pub(crate) const MAX_BATCH_BYTES: usize = 1_000_000 - 4_096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    Create,
    Update,
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

/// Why a record of `bytes` bytes is never sent: no batch can carry it.
pub(crate) fn too_large(bytes: usize) -> String {
    format!(
        "the record is {bytes} bytes: alone it is over Marketo's 1 MB request limit (shorten the long fields in Dynamics)"
    )
}

/// What push would do, without the records to send themselves (read with `upserts`).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    counts: BTreeMap<Object, Counts>,
    /// The records to send that are alone over the request limit (push reports them each
    /// time); the others it skips are counted here and listed by `each_skipped`.
    too_large: Vec<Operation>,
    /// The records to send whose payload Marketo refused since `held_since` (`None`: no
    /// refusal holds a record back now, and none is looked up): not sent again
    /// until they change or the refusal is older (`[marketo] retry_refused_hours`); and the
    /// roles that wait for a lead or opportunity held so.
    held: Vec<Held>,
    held_since: Option<String>,
    /// Role deletes, then opportunity deletes (push order).
    deletes: Vec<Operation>,
    batches: Vec<Batch>,
    /// Per object, the fields its records to send carry.
    fields: BTreeMap<Object, BTreeSet<String>>,
    /// The objects push describes before sending (`describe::split`), and for the others
    /// it sends, when the stored describe they are checked against was read.
    describes: BTreeSet<Object>,
    trusted_describes: BTreeMap<Object, String>,
    /// How the export rows were brought up to date for this plan.
    pub refreshed: Option<Refreshed>,
}

/// A record held back after a refusal: the operation (its reason the problem push recorded),
/// when Marketo refused, and whether it was refused itself or waits for its lead or
/// opportunity.
#[derive(Debug)]
struct Held {
    op: Operation,
    refused_at: String,
    waits: bool,
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
        self.counts.get(&object).cloned().unwrap_or_default()
    }

    /// How many records of `object` push would create or update.
    pub(crate) fn upsert_count(&self, object: Object) -> usize {
        let counts = self.counts(object);
        counts.create + counts.update
    }

    /// Counts the records of `object` to send anew, with their fields and batches, after push
    /// marked more of them to send than the plan had (the roles of a lead or opportunity
    /// Marketo gave a new id, `export::push`): those now to send are no longer unchanged.
    /// Returns how many there are to send now.
    pub(crate) fn reread_upserts(&mut self, conn: &Connection, object: Object) -> Result<usize> {
        let since = self.held_since.clone();
        let (create, update) = pending_counts(conn, object, since.as_deref())?;
        let counts = self.counts.entry(object).or_default();
        let added = (create + update).saturating_sub(counts.create + counts.update);
        counts.unchanged = counts.unchanged.saturating_sub(added);
        (counts.create, counts.update) = (create, update);
        self.fields.remove(&object);
        self.batches.retain(|b| b.object != object || b.deletes);
        if create + update > 0 {
            let (fields, batches) = fields_and_batches(conn, object, since.as_deref())?;
            self.fields.insert(object, fields);
            // Upserts go in `Object::ALL` order, before every delete.
            let rank = |o: Object| Object::ALL.iter().position(|x| *x == o);
            let at = self
                .batches
                .iter()
                .position(|b| b.deletes || rank(b.object) > rank(object))
                .unwrap_or(self.batches.len());
            self.batches.splice(at..at, batches);
        }
        Ok(create + update)
    }

    /// The deletes of one object.
    pub(crate) fn deletes(&self, object: Object) -> Vec<&Operation> {
        self.deletes
            .iter()
            .filter(|op| op.object == object)
            .collect()
    }

    /// The records to send that are alone over Marketo's request limit.
    pub(crate) fn too_large(&self) -> impl Iterator<Item = &Operation> {
        self.too_large.iter()
    }

    /// The records held back because Marketo refused their payload lately, with its answer.
    pub(crate) fn held(&self) -> impl Iterator<Item = &Operation> {
        self.held.iter().map(|held| &held.op)
    }

    /// How many records push skips, of every object.
    pub(crate) fn skip_count(&self) -> usize {
        self.counts.values().map(|c| c.skip).sum()
    }

    /// The fields the records of `object` to send carry (empty when none is to be sent).
    pub(crate) fn fields(&self, object: Object) -> BTreeSet<String> {
        self.fields.get(&object).cloned().unwrap_or_default()
    }

    /// The batches push would send, in push order: upserts by object, then role deletes, then
    /// opportunity deletes. Sizes are estimated from the payloads (push adds a role's leadId).
    pub(crate) fn batches(&self) -> &[Batch] {
        &self.batches
    }

    /// The objects push describes before it sends their records: the others it sends are
    /// checked against describes stored within `describe_max_age_hours`.
    pub(crate) fn describes(&self) -> &BTreeSet<Object> {
        &self.describes
    }

    /// The objects push sends whose fields are checked against a stored describe, with when
    /// Marketo gave it.
    pub(crate) fn trusted_describes(&self) -> &BTreeMap<Object, String> {
        &self.trusted_describes
    }

    /// REST calls push needs for this plan, describes included (the identity call is free and
    /// not counted).
    pub(crate) fn calls(&self) -> BTreeMap<String, usize> {
        let mut calls = BTreeMap::new();
        if !self.describes.is_empty() {
            calls.insert("describes".to_string(), self.describes.len());
        }
        for batch in &self.batches {
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

/// Brings the export rows up to date (a writing connection refreshes the stored ones; a
/// read-only one evaluates them into temp tables when the stored ones are not current), then
/// reads the plan.
pub(crate) fn load(conn: &mut Connection, config: &Config) -> Result<Plan> {
    load_reading(conn, config, true)
}

/// The plan's counts, skips and deletes only, without the batches and fields that need every
/// record to send read (`status`).
pub(crate) fn load_counts(conn: &mut Connection, config: &Config) -> Result<Plan> {
    load_reading(conn, config, false)
}

fn load_reading(conn: &mut Connection, config: &Config, sends: bool) -> Result<Plan> {
    let refreshed = if conn.is_readonly(MAIN_DB)? {
        export_rows::evaluate_temporary(conn, config)?;
        None
    } else {
        Some(export_rows::refresh(conn, config).context("refreshing the export rows")?)
    };
    let mut plan = read(conn, config, sends)?;
    plan.refreshed = refreshed;
    if sends {
        let stored = match describe::instance(&config.marketo) {
            Some(instance) => {
                describe::stored(conn, &instance, config.marketo.describe_max_age_hours)?
            }
            None => BTreeMap::new(),
        };
        (plan.describes, plan.trusted_describes) = describe::split(&plan, stored, &config.mapping);
    }
    Ok(plan)
}

/// The export rows push has to send, read on their partial index. `INDEXED BY` because the
/// planner otherwise prefers `export_row_by_key` (it serves `key IS NOT NULL` as a range too)
/// and scans every row of the object, so that an idle plan costs what exists; and because a
/// schema change that made the index unusable must fail loudly rather than slow down.
const PENDING: &str = "export_row e INDEXED BY export_row_pending";

/// The condition on an export row (aliased `e`) that the view gives it a key and a payload
/// and no reason to skip it, and that it fits in a request (`?2` is the limit).
const FITS: &str = "e.skip_reason IS NULL AND e.key IS NOT NULL AND e.payload IS NOT NULL AND length(e.payload) < ?2";

/// The condition on an export row (aliased `e`) that Marketo did not refuse this very payload
/// since `?3` (`Plan::held_since`; NULL when no refusal holds, so that no record is looked up:
/// a lookup for each of 300k rows to send cost a plan at 100k opportunities 0.4 s).
const NOT_REFUSED: &str = "(?3 IS NULL OR NOT EXISTS (SELECT 1 FROM main.mkto_refused r
    WHERE r.object = e.object AND r.key = e.key AND r.payload = e.payload AND r.refused_at >= ?3))";

/// The condition on an export row (aliased `e`) that it can be sent: it `FITS`, is
/// `NOT_REFUSED`, and does not wait for a lead or opportunity held back so
/// (`held_since_refused`; `held_rows` lists those that wait).
fn sendable() -> String {
    format!(
        "{FITS} AND {NOT_REFUSED}
    AND (?3 IS NULL OR e.object <> 'opportunity_role' OR ({lead} IS NULL AND {opportunity} IS NULL))",
        lead = held_since_refused("lead", "e.lead_key"),
        opportunity = held_since_refused("opportunity", "e.root"),
    )
}

/// When Marketo refused the `object` keyed by the SQL expression `key`, if that holds it back
/// now (since `?3`, the payload to send still the one refused) and Marketo does not hold it
/// (never acknowledged, or lost there since: its acknowledged payload set back by push):
/// a role pointing at it cannot be sent (push adds the lead's Marketo id, and Marketo wants
/// its opportunity first), so the role waits with it rather than being read and reported as
/// not sent by every push. NULL otherwise. Only the roles' lead and opportunity are held so.
fn held_since_refused(object: &str, key: &str) -> String {
    format!(
        "(SELECT r.refused_at FROM main.mkto_refused r
            CROSS JOIN export_row p ON p.object = r.object AND p.key = r.key AND p.payload = r.payload
         WHERE r.object = '{object}' AND r.key = {key} AND r.refused_at >= ?3 AND p.pending = 1
             AND NOT EXISTS (SELECT 1 FROM main.mkto_ack a WHERE a.object = r.object
                 AND a.key = r.key AND a.marketo_id IS NOT NULL AND a.payload <> ''))"
    )
}

/// Reads the plan from the export rows as they are; with `sends`, also the batches and the
/// fields of the records to send.
fn read(conn: &Connection, config: &Config, sends: bool) -> Result<Plan> {
    let mut plan = Plan {
        held_since: held_since(conn, config.marketo.retry_refused_hours)?,
        ..Plan::default()
    };
    let since = plan.held_since.as_deref();
    for object in Object::ALL {
        let name = object.name();
        let (create, update) = pending_counts(conn, object, since)?;
        let total = export_rows::total(conn, &format!("rows:{name}"))?.max(0) as usize;
        let too_large = too_large_rows(conn, object)?;
        let held = held_rows(conn, object, since)?;
        let skip = unsendable_count(conn, object)? + too_large.len() + held.len();
        let deletes = deletes(conn, object, config)?;
        let counts = Counts {
            create,
            update,
            unchanged: total.saturating_sub(create + update).saturating_sub(skip),
            delete: deletes.len(),
            skip,
        };
        plan.counts.insert(object, counts);
        plan.too_large.extend(too_large);
        plan.held.extend(held);
        plan.deletes.extend(deletes);
        if sends && create + update > 0 {
            let (fields, batches) = fields_and_batches(conn, object, since)?;
            plan.fields.insert(object, fields);
            plan.batches.extend(batches);
        }
    }
    // Push order: every upsert by object, then role deletes, then opportunity deletes.
    plan.deletes
        .sort_by_key(|op| op.object != Object::OpportunityRole);
    for object in [Object::OpportunityRole, Object::Opportunity] {
        let sizes: Vec<usize> = plan
            .deletes(object)
            .iter()
            .map(|op| op.payload.as_ref().map_or(64, |p| p.len() + 1))
            .collect();
        push_batches(&mut plan.batches, object, true, &sizes);
    }
    Ok(plan)
}

/// The fields the records of `object` to send carry, and their batches.
fn fields_and_batches(
    conn: &Connection,
    object: Object,
    since: Option<&str>,
) -> Result<(BTreeSet<String>, Vec<Batch>)> {
    let mut batches = Vec::new();
    push_batches(
        &mut batches,
        object,
        false,
        &upsert_sizes(conn, object, since)?,
    );
    Ok((fields(conn, object, since)?, batches))
}

/// How many records of `object` there are to send, as (to create, to update): split by
/// whether Marketo holds the key, counted on the pending index.
fn pending_counts(
    conn: &Connection,
    object: Object,
    since: Option<&str>,
) -> Result<(usize, usize)> {
    let (create, update): (i64, i64) = conn
        .prepare_cached(&pending_counts_sql())?
        .query_row(params![object.name(), MAX_BATCH_BYTES as i64, since], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok((create as usize, update as usize))
}

fn push_batches(batches: &mut Vec<Batch>, object: Object, deletes: bool, sizes: &[usize]) {
    let mut start = 0;
    for records in batch_sizes(sizes) {
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

/// The serialized size of each record to send, in rowid order (the order push sends them in).
fn upsert_sizes(conn: &Connection, object: Object, since: Option<&str>) -> Result<Vec<usize>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT length(e.payload) + 1 FROM {PENDING}
         WHERE e.object = ?1 AND e.pending = 1 AND {sendable} ORDER BY e.rowid",
        sendable = sendable()
    ))?;
    let sizes = stmt
        .query_map(params![object.name(), MAX_BATCH_BYTES as i64, since], |r| {
            r.get::<_, i64>(0)
        })?
        .map(|size| size.map(|s| s as usize))
        .collect::<rusqlite::Result<_>>()?;
    Ok(sizes)
}

/// The fields of the records to send. Every row of an export view carries the same fields
/// (`json_object` with fixed names, plus the mapped fields `json_set` adds to each), so one row
/// names them all.
fn fields(conn: &Connection, object: Object, since: Option<&str>) -> Result<BTreeSet<String>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.key FROM (SELECT e.payload FROM {PENDING}
             WHERE e.object = ?1 AND e.pending = 1 AND {sendable} LIMIT 1) f, json_each(f.payload) j",
        sendable = sendable()
    ))?;
    let fields = stmt
        .query_map(params![object.name(), MAX_BATCH_BYTES as i64, since], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(fields)
}

/// How many records of `object` the plan cannot send whatever Marketo holds (the view gives a
/// reason, or no key or payload), counted on the partial index `export_row_skipped`.
fn unsendable_count(conn: &Connection, object: Object) -> Result<usize> {
    let count: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM export_row e WHERE e.object = ?1 AND {}",
            export_rows::unsendable("e")
        ))?
        .query_row([object.name()], |r| r.get(0))?;
    Ok(count as usize)
}

/// The records of `object` to send that are alone over the request limit, read on the pending
/// index: push skips them each time it reads the records to send.
fn too_large_rows(conn: &Connection, object: Object) -> Result<Vec<Operation>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT e.key, e.source_id, length(e.payload) + 1 FROM {PENDING}
         WHERE e.object = ?1 AND e.pending = 1 AND length(e.payload) >= ?2
             AND e.skip_reason IS NULL AND e.key IS NOT NULL
         ORDER BY e.key, e.source_id"
    ))?;
    let rows = stmt
        .query_map(params![object.name(), MAX_BATCH_BYTES as i64], |r| {
            let size: i64 = r.get(2)?;
            Ok(skip(object, r.get(0)?, r.get(1)?, too_large(size as usize)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn skip(
    object: Object,
    key: Option<String>,
    source_id: Option<String>,
    reason: String,
) -> Operation {
    Operation {
        object,
        action: Action::Skip,
        key,
        source_id,
        payload: None,
        reason: Some(reason),
        lead_key: None,
    }
}

/// When the refusals that still hold a record back were answered, at the earliest: `hours`
/// ago. `None` when no refusal is that recent (with 0 hours, none is: every refused record is
/// sent again by the next push).
fn held_since(conn: &Connection, hours: u32) -> Result<Option<String>> {
    if hours == 0 {
        return Ok(None);
    }
    let since = (chrono::Utc::now() - chrono::Duration::hours(i64::from(hours)))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let any: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.mkto_refused WHERE refused_at >= ?1)",
        [&since],
        |r| r.get(0),
    )?;
    Ok(any.then_some(since))
}

/// The records of `object` to send whose payload Marketo refused since `since`, with its
/// answer (as push recorded it, so that the problem stands) and when; then, of roles, those
/// that wait for their lead or opportunity (`held_since_refused`), with the reason push gives
/// a role it cannot send for that.
fn held_rows(conn: &Connection, object: Object, since: Option<&str>) -> Result<Vec<Held>> {
    if since.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT e.key, e.source_id, r.reason, r.refused_at
         FROM main.mkto_refused r CROSS JOIN export_row e
             ON e.object = r.object AND e.key = r.key AND e.payload = r.payload
         WHERE r.object = ?1 AND r.refused_at >= ?2 AND e.pending = 1
         ORDER BY r.key",
    )?;
    let mut rows: Vec<Held> = stmt
        .query_map(params![object.name(), since], |r| {
            Ok(Held {
                op: skip(object, r.get(0)?, r.get(1)?, r.get(2)?),
                refused_at: r.get(3)?,
                waits: false,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if object != Object::OpportunityRole {
        return Ok(rows);
    }
    // The roles to send but for their lead or opportunity: read on the pending index, each
    // looked up in `mkto_refused` (only when some refusal holds, as here).
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT key, source_id, lead_key, root, lead_refused_at, opportunity_refused_at FROM (
             SELECT e.key, e.source_id, e.lead_key, e.root,
                 {lead} AS lead_refused_at, {opportunity} AS opportunity_refused_at
             FROM {PENDING}
             WHERE e.object = ?1 AND e.pending = 1 AND {FITS} AND {NOT_REFUSED})
         WHERE lead_refused_at IS NOT NULL OR opportunity_refused_at IS NOT NULL
         ORDER BY key",
        lead = held_since_refused("lead", "e.lead_key"),
        opportunity = held_since_refused("opportunity", "e.root"),
    ))?;
    let waiting = stmt.query_map(params![object.name(), MAX_BATCH_BYTES as i64, since], |r| {
        let (lead, opportunity): (Option<String>, String) = (r.get(2)?, r.get(3)?);
        let (lead_at, opportunity_at): (Option<String>, Option<String>) = (r.get(4)?, r.get(5)?);
        // As push tells it (`export::push::upsert_records`): the lead first.
        let (reason, refused_at) = match (lead_at, opportunity_at) {
            (Some(at), _) => (
                format!(
                    "the lead for {} is not in Marketo",
                    lead.as_deref().unwrap_or("?")
                ),
                at,
            ),
            (None, at) => (
                format!("opportunity {opportunity} is not in Marketo"),
                at.unwrap_or_default(),
            ),
        };
        Ok(Held {
            op: skip(object, r.get(0)?, r.get(1)?, reason),
            refused_at,
            waits: true,
        })
    })?;
    for held in waiting {
        rows.push(held?);
    }
    Ok(rows)
}

/// Calls `each` with every record the plan skips, object by object in push order: for each,
/// those it cannot send by key, then those over the request limit and those held back after a
/// refusal (both held by the plan); until it breaks. The first are read from the export rows
/// as it goes, so that an org with a million records that cannot be sent is listed without
/// holding them.
pub(crate) fn each_skipped(
    conn: &Connection,
    plan: &Plan,
    mut each: impl FnMut(Operation) -> ControlFlow<()>,
) -> Result<()> {
    for object in Object::ALL {
        // On the partial index of the rows that cannot be sent: a plan with none reads nothing.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT e.key, e.source_id, coalesce(e.skip_reason, 'no key or payload')
             FROM export_row e WHERE e.object = ?1 AND {}
             ORDER BY e.key, e.source_id",
            export_rows::unsendable("e")
        ))?;
        let mut rows = stmt.query([object.name()])?;
        while let Some(row) = rows.next()? {
            if each(skip(object, row.get(0)?, row.get(1)?, row.get(2)?)).is_break() {
                return Ok(());
            }
        }
        for op in plan.too_large().filter(|op| op.object == object) {
            if each(op.clone()).is_break() {
                return Ok(());
            }
        }
        for held in plan.held.iter().filter(|held| held.op.object == object) {
            let (at, reason) = (&held.refused_at, held.op.reason.as_deref().unwrap_or(""));
            let reason = if held.waits {
                format!(
                    "{reason}: Marketo refused it at {at}, and it is held back (the role goes once it is in Marketo)"
                )
            } else {
                format!(
                    "Marketo refused this record at {at}: {reason} (sent again when it changes, or after marketo.retry_refused_hours)"
                )
            };
            let listed = Operation {
                reason: Some(reason),
                ..held.op.clone()
            };
            if each(listed).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The keys Marketo holds that the views no longer give and that may be deleted: companies,
/// leads and sales persons never; an opportunity when it is a tombstone and
/// `on_opportunity_delete = "delete"`; a role when its opportunity is still exported, or is
/// itself being deleted.
fn deletes(conn: &Connection, object: Object, config: &Config) -> Result<Vec<Operation>> {
    if !matches!(object, Object::Opportunity | Object::OpportunityRole) {
        return Ok(Vec::new());
    }
    let delete_opportunities = config.marketo.on_opportunity_delete == OnOpportunityDelete::Delete;
    let mut stmt = conn.prepare_cached(
        "SELECT r.key, a.payload FROM export_removed r
         JOIN main.mkto_ack a ON a.object = r.object AND a.key = r.key
         WHERE r.object = ?1 ORDER BY r.key",
    )?;
    let candidates: Vec<(String, String)> = stmt
        .query_map([object.name()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut exported = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM export_row WHERE object = 'opportunity' AND key = ?1)",
    )?;
    let mut tombstoned = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM main.opportunity WHERE opportunityid = ?1 AND deleted_run IS NOT NULL)",
    )?;
    let mut operations = Vec::new();
    for (key, payload) in candidates {
        let (opportunity, lead_key) = match object {
            Object::Opportunity => (key.clone(), None),
            _ => match RoleKey::parse(&key) {
                Some(role) => (role.opportunity, Some(role.lead)),
                None => continue,
            },
        };
        let deleted = delete_opportunities
            && tombstoned.query_row([&opportunity], |r| r.get::<_, bool>(0))?;
        let deletable = match object {
            Object::Opportunity => deleted,
            _ => deleted || exported.query_row([&opportunity], |r| r.get::<_, bool>(0))?,
        };
        if deletable {
            operations.push(Operation {
                object,
                action: Action::Delete,
                key: Some(key),
                source_id: None,
                payload: Some(payload),
                reason: None,
                lead_key,
            });
        }
    }
    Ok(operations)
}

/// How many rows of object ?1 push has to send, to create and to update (?2 the largest payload).
fn pending_counts_sql() -> String {
    format!(
        "SELECT count(*) FILTER (WHERE a.key IS NULL), count(a.key)
         FROM {PENDING} LEFT JOIN main.mkto_ack a ON a.object = e.object AND a.key = e.key
         WHERE e.object = ?1 AND e.pending = 1 AND {sendable}",
        sendable = sendable()
    )
}

/// What `upserts` reads: ?1 the object, ?2 the largest payload, ?3 the refusals that hold a
/// record back since when, ?4 the rowid after which, ?5 how many.
fn upserts_sql() -> String {
    format!(
        "SELECT e.key, e.source_id, e.payload, e.lead_key, a.key IS NOT NULL, e.rowid
         FROM {PENDING} LEFT JOIN main.mkto_ack a ON a.object = e.object AND a.key = e.key
         WHERE e.object = ?1 AND e.pending = 1 AND {sendable} AND e.rowid > ?4
         ORDER BY e.rowid LIMIT ?5",
        sendable = sendable()
    )
}

/// Up to `limit` records of `object` to create or update, in rowid order, after rowid `after`,
/// with the rowid of the last: push reads the records to send a chunk at a time. Records
/// acknowledged since are no longer pending and are not read again; push changes no rowid.
pub(crate) fn upserts(
    conn: &Connection,
    plan: &Plan,
    object: Object,
    after: i64,
    limit: usize,
) -> Result<(Vec<Operation>, i64)> {
    let mut stmt = conn.prepare_cached(&upserts_sql())?;
    let mut last = after;
    let rows = stmt
        .query_map(
            params![
                object.name(),
                MAX_BATCH_BYTES as i64,
                plan.held_since,
                after,
                limit as i64
            ],
            |r| {
                let acked: bool = r.get(4)?;
                last = r.get(5)?;
                Ok(Operation {
                    object,
                    action: if acked {
                        Action::Update
                    } else {
                        Action::Create
                    },
                    key: r.get(0)?,
                    source_id: r.get(1)?,
                    payload: r.get(2)?,
                    reason: None,
                    lead_key: r.get(3)?,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()
        .with_context(|| format!("reading the {} to send", object.plural()))?;
    Ok((rows, last))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn db() -> Connection {
        crate::db::open_scratch().unwrap()
    }

    #[test]
    fn push_reads_the_rows_to_send_a_chunk_at_a_time_in_rowid_order_once_each() {
        let conn = db();
        // Keys out of rowid order; b acknowledged as it is (not sent), d with another payload
        // (an update), e skipped, and a company between them.
        conn.execute_batch(
            r#"INSERT INTO export_row (object, root, key, source_id, payload, skip_reason, pending) VALUES
                 ('lead', 'c', 'c', 's1', '{"n":1}', NULL, 1),
                 ('lead', 'a', 'a', 's2', '{"n":2}', NULL, 1),
                 ('company', 'b', 'b', 's3', '{"n":3}', NULL, 1),
                 ('lead', 'e', 'e', 's4', '{"n":4}', 'left out', 0),
                 ('lead', 'b', 'b', 's5', '{"n":5}', NULL, 1),
                 ('lead', 'd', 'd', 's6', '{"n":6}', NULL, 1);
               INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'push', '[]', 'now');
               INSERT INTO mkto_ack (object, key, payload, run_id, acked_at) VALUES
                 ('lead', 'b', '{"n":5}', 1, 'now'),
                 ('lead', 'd', '{"n":0}', 1, 'now');
               -- Refused: f as it is now and lately (held back), a with another payload, g long ago.
               INSERT INTO export_row (object, root, key, source_id, payload, skip_reason, pending) VALUES
                 ('lead', 'f', 'f', 's7', '{"n":7}', NULL, 1),
                 ('lead', 'g', 'g', 's8', '{"n":8}', NULL, 1);
               INSERT INTO mkto_refused (object, key, payload, reason, refused_at) VALUES
                 ('lead', 'f', '{"n":7}', '1003 bad', '2026-01-02T00:00:00Z'),
                 ('lead', 'a', '{"n":0}', '1003 bad', '2026-01-02T00:00:00Z'),
                 ('lead', 'g', '{"n":8}', '1003 bad', '2025-12-31T00:00:00Z');"#,
        )
        .unwrap();
        let plan = Plan {
            held_since: Some("2026-01-01T00:00:00Z".into()),
            ..Plan::default()
        };
        let mut read = Vec::new();
        let mut after = 0;
        loop {
            let (ops, last) = upserts(&conn, &plan, Object::Lead, after, 2).unwrap();
            if ops.is_empty() {
                break;
            }
            assert!(last > after, "the cursor moves on");
            after = last;
            read.extend(ops.into_iter().map(|op| (op.key.unwrap(), op.action)));
        }
        assert_eq!(
            read,
            [
                ("c".to_string(), Action::Create),
                ("a".to_string(), Action::Create),
                ("d".to_string(), Action::Update),
                ("g".to_string(), Action::Create),
            ]
        );
        let held = held_rows(&conn, Object::Lead, plan.held_since.as_deref()).unwrap();
        assert_eq!(
            held.iter()
                .map(|held| (held.op.key.as_deref(), held.op.reason.as_deref()))
                .collect::<Vec<_>>(),
            [(Some("f"), Some("1003 bad"))]
        );
    }

    #[test]
    fn a_role_waits_for_its_lead_or_opportunity_held_back_after_a_refusal() {
        let conn = db();
        // Leads f (refused, not in Marketo) and h (an update refused, in Marketo); opportunity
        // o2 refused; lead g refused long ago. A role per case, and one with nothing refused.
        conn.execute_batch(
            r#"INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'push', '[]', 'now');
               INSERT INTO export_row (object, root, key, source_id, payload, skip_reason, lead_key, pending) VALUES
                 ('lead', 'f', 'f', 'c1', '{"n":1}', NULL, NULL, 1),
                 ('lead', 'h', 'h', 'c2', '{"n":2}', NULL, NULL, 1),
                 ('lead', 'g', 'g', 'c3', '{"n":3}', NULL, NULL, 1),
                 ('opportunity', 'o2', 'o2', 'o2', '{"n":4}', NULL, NULL, 1),
                 ('opportunity_role', 'o1', '["o1","f","r"]', 'p1', '{"r":1}', NULL, 'f', 1),
                 ('opportunity_role', 'o1', '["o1","h","r"]', 'p2', '{"r":2}', NULL, 'h', 1),
                 ('opportunity_role', 'o2', '["o2","c","r"]', 'p3', '{"r":3}', NULL, 'c', 1),
                 ('opportunity_role', 'o1', '["o1","c","r"]', 'p4', '{"r":4}', NULL, 'c', 1),
                 ('opportunity_role', 'o1', '["o1","g","r"]', 'p5', '{"r":5}', NULL, 'g', 1);
               INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at) VALUES
                 ('lead', 'h', '{"n":0}', '7', 1, 'now');
               INSERT INTO mkto_refused (object, key, payload, reason, refused_at) VALUES
                 ('lead', 'f', '{"n":1}', '1003 bad', '2026-01-02T00:00:00Z'),
                 ('lead', 'h', '{"n":2}', '1003 bad', '2026-01-02T00:00:00Z'),
                 ('opportunity', 'o2', '{"n":4}', '1003 bad', '2026-01-03T00:00:00Z'),
                 ('lead', 'g', '{"n":3}', '1003 bad', '2025-12-31T00:00:00Z');"#,
        )
        .unwrap();
        let plan = Plan {
            held_since: Some("2026-01-01T00:00:00Z".into()),
            ..Plan::default()
        };
        let (sent, _) = upserts(&conn, &plan, Object::OpportunityRole, 0, 100).unwrap();
        assert_eq!(
            sent.iter()
                .map(|op| op.source_id.as_deref())
                .collect::<Vec<_>>(),
            [Some("p2"), Some("p4"), Some("p5")]
        );
        let held = held_rows(&conn, Object::OpportunityRole, plan.held_since.as_deref()).unwrap();
        assert_eq!(
            held.iter()
                .map(|h| (
                    h.op.source_id.as_deref(),
                    h.op.reason.as_deref(),
                    h.refused_at.as_str(),
                    h.waits
                ))
                .collect::<Vec<_>>(),
            [
                (
                    Some("p1"),
                    Some("the lead for f is not in Marketo"),
                    "2026-01-02T00:00:00Z",
                    true
                ),
                (
                    Some("p3"),
                    Some("opportunity o2 is not in Marketo"),
                    "2026-01-03T00:00:00Z",
                    true
                ),
            ]
        );
        // Without a refusal that holds, every role goes, and none is looked up.
        let (sent, _) = upserts(&conn, &Plan::default(), Object::OpportunityRole, 0, 100).unwrap();
        assert_eq!(sent.len(), 5);
    }

    #[test]
    fn push_reads_the_rows_to_send_on_the_pending_index_without_sorting() {
        let plan = crate::db::query_plan(&db(), &upserts_sql(), params!["lead", 1, "", 0, 1]);
        assert!(
            plan.contains("USING INDEX export_row_pending (object=? AND rowid>?)"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn an_idle_plan_counts_on_the_pending_index_not_every_row() {
        // export_row_by_key also serves `key IS NOT NULL` (as a range): chosen, it made an idle
        // plan read every row of every object (1.2 s at 1M opportunities).
        let plan = crate::db::query_plan(&db(), &pending_counts_sql(), params!["lead", 1, ""]);
        assert!(
            plan.contains("SEARCH e USING INDEX export_row_pending (object=?)"),
            "{plan}"
        );
    }
}
