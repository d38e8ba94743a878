//! Sends a plan to Marketo and records every per-record outcome.
//!
//! Order: sales persons, companies, leads, opportunities, roles (upserts, `createOrUpdate` by
//! dedupe fields, leads by email); then role deletes; then opportunity deletes. Batches hold at
//! most 300 records and 1 MB; up to `max_in_flight` of one object are in flight at once, and
//! every object is answered before the next starts. Results are matched to records by `seq` (leads, whose results carry none,
//! by position after checking the count); an answer that cannot be matched acknowledges nothing.
//! A result without the id its object needs is not acknowledged, so the next push sends the
//! record again. Each batch's outcomes and the acknowledged state they advance are written in
//! one transaction, and only after Marketo answered, so a crash at any point followed by a
//! rerun converges on the same Marketo state (createOrUpdate is idempotent, and leads are
//! matched by email, never duplicated).
//!
//! A batch Marketo refuses at request level (or never answers through every retry) is split in
//! halves, down to the record at fault, which is recorded as skipped with Marketo's answer;
//! the rest goes. Isolation is bounded (`ISOLATION_BUDGET` refused calls per push), and a
//! record is only blamed when Marketo has answered something in this push: when nothing gets
//! through, Marketo is unreachable and push stops instead.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::client::{CallLog, Exchange, Failure, MarketoClient, NATIVE_SYNC};
use super::describe;
use crate::config::MappingConfig;
use crate::exit::usage;
use crate::object::{Object, RoleKey};
use crate::plan::{self, Action, Operation, Plan};
use crate::redact::redact;
use crate::run::now;

/// Refused calls a push may spend isolating records before it stops: about ten records at
/// fault among 300, so that a refusal of every record does not eat the daily quota.
const ISOLATION_BUDGET: usize = 150;
/// Tries per request while isolating: the whole batch already had every retry.
const ISOLATION_ATTEMPTS: u32 = 2;
/// Record-level refusals of the record's own values, which come back the same for the same
/// payload: 1001 a value of the wrong type, 1002 a required value missing, 1003 an invalid
/// value, 1007 several records in Marketo match it (duplicates to merge there).
const HELD_CODES: [&str; 4] = ["1001", "1002", "1003", "1007"];
/// Record-level refusals of a role whose lead or opportunity Marketo does not have: "not
/// found", 1004 or 1013 (unconfirmed which; the simulator answers 1013).
const PARENT_MISSING_CODES: [&str; 2] = ["1004", "1013"];
/// A record names a sales person Marketo does not know (for the record, or for the whole call:
/// unconfirmed which).
const SALES_PERSON_UNKNOWN: &str = "718";
/// Records read from the export rows at a time: twenty full batches.
const CHUNK_RECORDS: usize = 20 * plan::MAX_BATCH_RECORDS;

/// What a push did, per object; the `push` run's counts.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub created: BTreeMap<&'static str, usize>,
    pub updated: BTreeMap<&'static str, usize>,
    pub deleted: BTreeMap<&'static str, usize>,
    /// The records not sent that this push reports: those it could not send this time
    /// (refused by Marketo, over the request limit, a role whose lead Marketo lacks), then
    /// those the plan cannot send whose problem is new (the run's counts list the first
    /// 1,000, `cmd::push::LISTED_IN_COUNTS`).
    pub skipped: Vec<Skipped>,
    /// Every record not sent: the above, those the plan cannot send that stand since an
    /// earlier push, and those held back after a refusal (counted, not listed).
    pub skipped_total: usize,
    pub calls: usize,
    /// Whether Marketo accepted any call in this push: a refusal is only blamed on a record
    /// when Marketo is demonstrably answering.
    #[serde(skip)]
    answered: bool,
    /// Refused calls spent isolating records.
    #[serde(skip)]
    isolation_calls: usize,
}

/// A record that was not acknowledged, and why.
#[derive(Debug, Serialize)]
pub(crate) struct Skipped {
    pub object: &'static str,
    pub key: Option<String>,
    pub source_id: Option<String>,
    pub reason: String,
}

/// Where and how a push sends: the instance, the `[mapping.*]` settings the records' fields
/// are checked with, and how many requests of one object may be in flight at once.
pub(crate) struct Destination<'a> {
    pub client: &'a MarketoClient,
    pub mapping: &'a MappingConfig,
    pub max_in_flight: usize,
}

/// One record ready to send, with the operation it serves.
struct Outgoing {
    op: Operation,
    record: Value,
}

/// Sends `plan`. A plan with nothing to create, update or delete makes no call at all.
pub(crate) fn push(
    conn: &mut Connection,
    run_id: i64,
    plan: &mut Plan,
    to: &Destination<'_>,
    say: &dyn Fn(String),
) -> Result<Summary> {
    let mut summary = Summary::default();
    // The instance must have every field the records carry; checked once, before anything goes,
    // against Marketo's describes: those stored within `describe_max_age_hours`, and fresh ones
    // of the other objects, which are stored in turn.
    let describes = plan.describes().clone();
    summary.calls += check_fields(conn, run_id, plan, to, &describes)?;
    for (object, described_at) in plan.trusted_describes() {
        crate::progress::detail(&format!(
            "{}: fields checked against Marketo's describe of {described_at} (stored; no call)",
            object.plural()
        ));
    }
    record_too_large(conn, run_id, plan, &mut summary)?;
    for object in Object::ALL {
        if object == Object::OpportunityRole {
            // Leads and opportunities Marketo gave a new id (deleted or merged there): their
            // roles go again, in this push.
            let marked = resend_roles_of_moved(conn)?;
            if marked > 0 {
                say(format!(
                    "roles: {marked} to send again, as their lead or opportunity has a new Marketo id (deleted or merged in Marketo)"
                ));
                if plan.upsert_count(object) == 0 {
                    send_roles_unplanned(conn, run_id, plan, to, &mut summary)?;
                }
            }
        }
        let total = plan.upsert_count(object);
        if total == 0 {
            continue;
        }
        let lane = Lane {
            client: to.client,
            object,
            delete: false,
            max_in_flight: to.max_in_flight,
            trusted_describe: plan.trusted_describes().get(&object).cloned(),
        };
        let bar = crate::progress::bar(object.plural(), total as u64);
        // The records to send, a chunk at a time in rowid order, the next read while the last
        // requests of the one before are in flight: memory holds about two chunks, and a record
        // acknowledged meanwhile is no longer pending.
        let mut after = 0;
        let mut next_chunk = |conn: &mut Connection, summary: &mut Summary| {
            let (ops, last) = plan::upserts(conn, plan, object, after, CHUNK_RECORDS)?;
            if ops.is_empty() {
                return Ok(None);
            }
            after = last;
            let outgoing = upsert_records(conn, run_id, object, ops, summary)?;
            batches(conn, run_id, outgoing, summary).map(Some)
        };
        let sent = send_parts(conn, run_id, &lane, &bar, &mut summary, &mut next_chunk);
        bar.finish_and_clear();
        sent?;
        say(format!(
            "{}: {} created, {} updated",
            object.plural(),
            summary.created.get(object.name()).unwrap_or(&0),
            summary.updated.get(object.name()).unwrap_or(&0)
        ));
    }
    for object in [Object::OpportunityRole, Object::Opportunity] {
        let ops: Vec<Operation> = plan.deletes(object).into_iter().cloned().collect();
        if ops.is_empty() {
            continue;
        }
        let outgoing = delete_records(conn, run_id, object, ops, &mut summary)?;
        let lane = Lane {
            client: to.client,
            object,
            delete: true,
            max_in_flight: to.max_in_flight,
            trusted_describe: None,
        };
        let bar = crate::progress::bar(object.plural(), outgoing.len() as u64);
        let mut only = Some(outgoing);
        let mut next_chunk = |conn: &mut Connection, summary: &mut Summary| match only.take() {
            Some(outgoing) => batches(conn, run_id, outgoing, summary).map(Some),
            None => Ok(None),
        };
        let sent = send_parts(conn, run_id, &lane, &bar, &mut summary, &mut next_chunk);
        bar.finish_and_clear();
        sent?;
        say(format!(
            "{}: {} deleted",
            object.plural(),
            summary.deleted.get(object.name()).unwrap_or(&0)
        ));
    }
    Ok(summary)
}

/// When the plan had no role to send but push marked some to send again (`resend_roles_of_moved`):
/// reads them into the plan, and checks their fields against a describe of roles made now, as
/// push checked the fields of the rest before anything went (a stored describe is not looked
/// for: this happens only after Marketo lost a lead or opportunity, and costs one call).
fn send_roles_unplanned(
    conn: &mut Connection,
    run_id: i64,
    plan: &mut Plan,
    to: &Destination<'_>,
    summary: &mut Summary,
) -> Result<()> {
    let object = Object::OpportunityRole;
    if plan.reread_upserts(conn, object)? == 0 {
        return Ok(());
    }
    let only = BTreeSet::from([object]);
    summary.calls += check_fields(conn, run_id, plan, to, &only)?;
    Ok(())
}

/// Describes `objects` and checks the fields of the plan's records of them against those
/// describes (`describe::check`: an error when one is missing or not updateable), logging the
/// calls and storing the describes. Returns the REST calls made.
fn check_fields(
    conn: &mut Connection,
    run_id: i64,
    plan: &Plan,
    to: &Destination<'_>,
    objects: &BTreeSet<Object>,
) -> Result<usize> {
    let mut calls = Vec::new();
    let checked = describe::check(
        to.client,
        plan,
        to.mapping,
        Some(objects),
        to.max_in_flight,
        &mut calls,
    );
    record_calls(conn, run_id, &calls)?;
    describe::store(conn, &to.client.instance(), run_id, &checked?)?;
    Ok(CallLog::rest_count(&calls))
}

/// Records the records to send that no batch can carry as not sent. The records the plan
/// cannot send at all are not read here: their problems stand between pushes
/// (`problem::check_unsendable`).
fn record_too_large(
    conn: &mut Connection,
    run_id: i64,
    plan: &Plan,
    summary: &mut Summary,
) -> Result<()> {
    let tx = conn.transaction()?;
    for op in plan.too_large() {
        let reason = op.reason.clone().unwrap_or_default();
        not_sent(&tx, run_id, op, "skip", reason, summary)?;
    }
    tx.commit()?;
    Ok(())
}

/// The Marketo id acknowledged for `key`, looked up by primary key (never the whole table).
/// With `held_now`, only while Marketo is taken to hold the record: not once its payload was
/// set back because Marketo lost it (`resend_parents`), until Marketo acknowledges it again.
fn acked_id(
    conn: &Connection,
    object: Object,
    key: &str,
    held_now: bool,
) -> Result<Option<String>> {
    let id = conn
        .prepare_cached(
            "SELECT marketo_id FROM mkto_ack WHERE object = ?1 AND key = ?2 AND marketo_id IS NOT NULL
                 AND (NOT ?3 OR payload <> '')",
        )?
        .query_row(params![object.name(), key, held_now], |r| r.get(0))
        .optional()?;
    Ok(id)
}

/// Builds the records to create or update; a role whose lead or opportunity Marketo has not
/// acknowledged cannot be sent and is skipped with the reason.
fn upsert_records(
    conn: &mut Connection,
    run_id: i64,
    object: Object,
    ops: Vec<Operation>,
    summary: &mut Summary,
) -> Result<Vec<Outgoing>> {
    let tx = conn.transaction()?;
    let mut outgoing = Vec::with_capacity(ops.len());
    for op in ops {
        let mut record: Value = serde_json::from_str(op.payload.as_deref().unwrap_or("{}"))
            .with_context(|| format!("payload of {} {:?}", object.name(), op.key))?;
        if object == Object::OpportunityRole {
            let opportunity = op
                .key
                .as_deref()
                .and_then(RoleKey::parse)
                .map(|key| key.opportunity)
                .unwrap_or_default();
            let lead_id = match &op.lead_key {
                Some(lead) => acked_id(&tx, Object::Lead, lead, true)?,
                None => None,
            };
            let opportunity_acked =
                acked_id(&tx, Object::Opportunity, &opportunity, true)?.is_some();
            let problem = match (lead_id, opportunity_acked) {
                (None, _) => Some(format!(
                    "the lead for {} is not in Marketo",
                    op.lead_key.as_deref().unwrap_or("?")
                )),
                (_, false) => Some(format!("opportunity {opportunity} is not in Marketo")),
                (Some(id), true) => {
                    record["leadId"] = json!(id.parse::<i64>().unwrap_or_default());
                    None
                }
            };
            if let Some(reason) = problem {
                not_sent(&tx, run_id, &op, "skip", reason, summary)?;
                continue;
            }
        }
        outgoing.push(Outgoing { op, record });
    }
    tx.commit()?;
    Ok(outgoing)
}

/// Builds the delete records: opportunities by externalOpportunityId, roles by their three key
/// fields (the leadId from the lead's acknowledged id).
fn delete_records(
    conn: &mut Connection,
    run_id: i64,
    object: Object,
    ops: Vec<Operation>,
    summary: &mut Summary,
) -> Result<Vec<Outgoing>> {
    let tx = conn.transaction()?;
    let mut outgoing = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.key.clone().unwrap_or_default();
        let record = match object {
            Object::Opportunity => json!({"externalOpportunityId": key}),
            _ => {
                let role_key = RoleKey::parse(&key);
                let lead_id = match &role_key {
                    // The id the role was sent with, even if Marketo lost the lead since.
                    Some(k) => acked_id(&tx, Object::Lead, &k.lead, false)?,
                    None => None,
                }
                .and_then(|id| id.parse::<i64>().ok());
                match (role_key, lead_id) {
                    (Some(k), Some(lead_id)) => {
                        json!({"externalOpportunityId": k.opportunity, "leadId": lead_id, "role": k.role})
                    }
                    _ => {
                        let reason = "cannot form the role's Marketo key (its lead id is unknown)"
                            .to_string();
                        not_sent(&tx, run_id, &op, "delete", reason, summary)?;
                        continue;
                    }
                }
            }
        };
        outgoing.push(Outgoing { op, record });
    }
    tx.commit()?;
    Ok(outgoing)
}

/// Where one object's requests go and how many may be in flight at once.
struct Lane<'c> {
    client: &'c MarketoClient,
    object: Object,
    delete: bool,
    max_in_flight: usize,
    /// When the stored describe this object's records were checked against was read, if they
    /// were (no describe call this push).
    trusted_describe: Option<String>,
}

impl Lane<'_> {
    fn path(&self) -> &'static str {
        if self.delete {
            self.object.delete_path()
        } else {
            self.object.sync_path()
        }
    }

    fn body(&self, records: &[Outgoing]) -> Value {
        let input: Vec<&Value> = records.iter().map(|o| &o.record).collect();
        match (self.object, self.delete) {
            (_, true) => json!({"deleteBy": "dedupeFields", "input": input}),
            (Object::Lead, false) => {
                json!({"action": "createOrUpdate", "lookupField": "email", "input": input})
            }
            (_, false) => {
                json!({"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": input})
            }
        }
    }
}

/// Records that go in one request: a range of a chunk the parts share; `split` when they are
/// part of a batch Marketo refused.
struct Part {
    chunk: Arc<[Outgoing]>,
    range: Range<usize>,
    split: bool,
}

impl Part {
    fn records(&self) -> &[Outgoing] {
        &self.chunk[self.range.clone()]
    }
}

/// A chunk of records cut into batches within Marketo's limits; a record over the request limit
/// on its own (a role's payload grows by its leadId after planning) is recorded as not sent.
fn batches(
    conn: &mut Connection,
    run_id: i64,
    outgoing: Vec<Outgoing>,
    summary: &mut Summary,
) -> Result<VecDeque<Part>> {
    let mut ready = Vec::with_capacity(outgoing.len());
    let mut sizes = Vec::with_capacity(outgoing.len());
    let tx = conn.transaction()?;
    for sent in outgoing {
        let size = sent.record.to_string().len() + 1;
        if size > plan::MAX_BATCH_BYTES {
            not_sent(
                &tx,
                run_id,
                &sent.op,
                "skip",
                plan::too_large(size),
                summary,
            )?;
            continue;
        }
        sizes.push(size);
        ready.push(sent);
    }
    tx.commit()?;
    let chunk: Arc<[Outgoing]> = ready.into();
    let mut parts = VecDeque::new();
    let mut start = 0;
    for size in plan::batch_sizes(&sizes) {
        parts.push_back(Part {
            chunk: Arc::clone(&chunk),
            range: start..start + size,
            split: false,
        });
        start += size;
    }
    Ok(parts)
}

/// Where `send_parts` gets more parts: the next chunk, or `None` when there is no more.
type NextChunk<'f> =
    dyn FnMut(&mut Connection, &mut Summary) -> Result<Option<VecDeque<Part>>> + 'f;

/// Sends the parts with up to `max_in_flight` requests at once, recording each answer (in the
/// order Marketo gives them, one transaction each) as it arrives. A part Marketo refuses at
/// request level is split in halves, which go next, down to the record at fault, which is
/// recorded as skipped. The next chunk is read as soon as the queue holds fewer parts than may
/// be in flight, so the requests do not drain between chunks. After an error nothing new is
/// sent; the requests in flight are awaited and their answers recorded, then the first error is
/// returned.
fn send_parts(
    conn: &mut Connection,
    run_id: i64,
    lane: &Lane<'_>,
    bar: &indicatif::ProgressBar,
    summary: &mut Summary,
    next_chunk: &mut NextChunk<'_>,
) -> Result<()> {
    let mut queue: VecDeque<Part> = VecDeque::new();
    let mut more = true;
    let (tx, rx) = mpsc::channel::<(Part, Exchange)>();
    let mut failed: Option<anyhow::Error> = None;
    std::thread::scope(|scope| -> Result<()> {
        let mut in_flight = 0;
        loop {
            // A requested stop sends nothing new; what is in flight is answered and recorded.
            if failed.is_none() {
                failed = crate::stop::check().err();
            }
            while failed.is_none() && more && queue.len() < lane.max_in_flight {
                match next_chunk(conn, summary) {
                    Ok(Some(parts)) => queue.extend(parts),
                    Ok(None) => more = false,
                    Err(err) => failed = Some(err),
                }
            }
            while failed.is_none() && in_flight < lane.max_in_flight {
                let Some(part) = queue.pop_front() else {
                    break;
                };
                let body = lane.body(part.records());
                // Parts of a split batch get two tries each: the whole batch had every retry.
                let attempts = part.split.then_some(ISOLATION_ATTEMPTS);
                let (tx, client, path) = (tx.clone(), lane.client, lane.path());
                scope.spawn(move || {
                    // Always answer, even if the request panicked, so that the loop below never
                    // waits for an answer that cannot come.
                    let exchange = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        client.post(path, &body, part.records().len(), attempts)
                    }))
                    .unwrap_or_else(|_| Exchange {
                        result: Err(anyhow::anyhow!("{path}: the request failed unexpectedly")),
                        calls: Vec::new(),
                    });
                    // The receiver outlives every sender in this scope.
                    let _ = tx.send((part, exchange));
                });
                in_flight += 1;
            }
            if in_flight == 0 {
                return Ok(());
            }
            let (part, exchange) = rx
                .recv()
                .context("a push request ended without an answer")?;
            in_flight -= 1;
            let answered = record_answer(conn, run_id, lane, part.records(), exchange, summary);
            bar.set_message(format!("{} calls", summary.calls));
            let Err(err) = answered else {
                summary.answered = true;
                bar.inc(part.records().len() as u64);
                continue;
            };
            if failed.is_some() {
                continue;
            }
            match isolate(conn, run_id, &part, err, summary)? {
                Isolated::Split(first, second) => {
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Isolated::Skipped => bar.inc(1),
                Isolated::Failed(err) => failed = Some(err),
            }
        }
    })?;
    failed.map_or(Ok(()), Err)
}

/// What a refused part becomes.
enum Isolated {
    Split(Part, Part),
    /// A single record, recorded as skipped with Marketo's answer.
    Skipped,
    /// Not the records' fault, or the isolation budget is spent: the push stops.
    Failed(anyhow::Error),
}

fn isolate(
    conn: &mut Connection,
    run_id: i64,
    part: &Part,
    err: anyhow::Error,
    summary: &mut Summary,
) -> Result<Isolated> {
    let Some(Failure::Refused { message, answered }) = err.downcast_ref::<Failure>() else {
        return Ok(Isolated::Failed(err));
    };
    if !answered && !summary.answered {
        // Nothing has got through yet: Marketo is unreachable, not this record at fault.
        return Ok(Isolated::Failed(err));
    }
    summary.isolation_calls += 1;
    if summary.isolation_calls > ISOLATION_BUDGET {
        return Ok(Isolated::Failed(err.context(format!(
            "Marketo refused {ISOLATION_BUDGET} requests while push looked for the records at fault; stopping"
        ))));
    }
    if part.range.len() > 1 {
        let middle = part.range.start + part.range.len() / 2;
        let half = |range: Range<usize>| Part {
            chunk: Arc::clone(&part.chunk),
            range,
            split: true,
        };
        return Ok(Isolated::Split(
            half(part.range.start..middle),
            half(middle..part.range.end),
        ));
    }
    let reason = format!("Marketo refused this record alone: {}", redact(message));
    let op = &part.records()[0].op;
    let tx = conn.transaction()?;
    // As the client words a refused call (`Attempt::Refused`).
    if message.contains(&format!("Marketo error {SALES_PERSON_UNKNOWN}:")) {
        resend_sales_person(&tx, run_id, op)?;
    }
    not_sent(&tx, run_id, op, "skip", reason, summary)?;
    tx.commit()?;
    Ok(Isolated::Skipped)
}

/// Records one request's calls and Marketo's answer to it; a refusal is returned for the
/// caller to isolate.
fn record_answer(
    conn: &mut Connection,
    run_id: i64,
    lane: &Lane<'_>,
    batch: &[Outgoing],
    exchange: Exchange,
    summary: &mut Summary,
) -> Result<()> {
    let Exchange {
        result: response,
        calls,
    } = exchange;
    let (object, delete, path) = (lane.object, lane.delete, lane.path());
    summary.calls += CallLog::rest_count(&calls);
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            record_calls(conn, run_id, &calls)?;
            return Err(err);
        }
    };
    let results = response
        .get("result")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let paired = match pair_results(object, batch.len(), results) {
        Ok(paired) => paired,
        Err(why) => {
            record_calls(conn, run_id, &calls)?;
            bail!(
                "Marketo's answer to {path} ({} {} sent) cannot be matched to the records: {why}; nothing in it was acknowledged",
                batch.len(),
                object.plural()
            );
        }
    };
    let tx = conn.transaction()?;
    insert_calls(&tx, run_id, &calls)?;
    let has_code = |result: &Value, code: &str| {
        result["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["code"] == code))
    };
    let mut native_sync = false;
    let mut field_gone = 0;
    for (sent, result) in batch.iter().zip(paired) {
        apply_result(&tx, run_id, object, delete, &sent.op, result, summary)?;
        native_sync |= has_code(result, "1018");
        field_gone += usize::from(has_code(result, "1006"));
    }
    if field_gone > 0 {
        // A field the records carry is gone: the next push describes the object again.
        describe::forget(&tx, object)?;
    }
    tx.commit().context("recording Marketo's answer")?;
    if native_sync {
        // Record-level 1018: no later call can go either; what was answered is recorded.
        return Err(usage(format!("{path}: {NATIVE_SYNC}")));
    }
    if let Some(described_at) = lane.trusted_describe.as_ref().filter(|_| field_gone > 0) {
        // The describe trusted without a call is out of date; every later batch would come back
        // skipped too. What was answered is recorded, and a rerun describes first.
        bail!(
            "Marketo skipped {field_gone} {} with 1006 (field not found), though its describe of {described_at} listed every field they carry: a field was deleted in Marketo since. The stored describe is forgotten; push again to describe {} first",
            object.plural(),
            object.plural()
        );
    }
    Ok(())
}

/// Each sent record's result, in input order: by `seq` where Marketo returns it (companies,
/// opportunities, roles), by position for leads (whose results carry no `seq`), after checking
/// that there is one result per record.
fn pair_results(object: Object, sent: usize, results: &[Value]) -> Result<Vec<&Value>, String> {
    if results.len() != sent {
        return Err(format!("{} results for {sent} records", results.len()));
    }
    if !object.results_carry_seq() {
        return Ok(results.iter().collect());
    }
    let mut paired: Vec<Option<&Value>> = vec![None; sent];
    for result in results {
        let Some(seq) = result.get("seq").and_then(Value::as_u64) else {
            return Err("a result has no seq".to_string());
        };
        let slot = usize::try_from(seq)
            .ok()
            .and_then(|i| paired.get_mut(i))
            .ok_or_else(|| format!("seq {seq} is out of range"))?;
        if slot.replace(result).is_some() {
            return Err(format!("seq {seq} is answered twice"));
        }
    }
    // One result per record and no seq twice: every slot is filled.
    Ok(paired.into_iter().flatten().collect())
}

/// The Marketo id in a result, when it has the shape its object needs: a positive integer `id`
/// for companies and leads, a non-empty `marketoGUID` for opportunities and roles.
fn marketo_id(object: Object, result: &Value) -> Option<String> {
    match result.get(object.id_field()) {
        Some(Value::Number(n)) if object.has_integer_id() => {
            n.as_u64().filter(|id| *id > 0).map(|id| id.to_string())
        }
        Some(Value::String(guid)) if !object.has_integer_id() && !guid.trim().is_empty() => {
            Some(redact(guid).into_owned())
        }
        _ => None,
    }
}

/// Records one record's result and advances the acknowledged state when Marketo accepted it.
fn apply_result(
    tx: &Transaction<'_>,
    run_id: i64,
    object: Object,
    delete: bool,
    op: &Operation,
    result: &Value,
    summary: &mut Summary,
) -> Result<()> {
    let status = result
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let marketo_id = marketo_id(object, result);
    let reasons = result.get("reasons").cloned().unwrap_or(Value::Null);
    if !delete && matches!(status, "created" | "updated") && marketo_id.is_none() {
        // Without its id a lead cannot carry roles, and an acknowledgement would stop the next
        // push from repairing that: not acknowledged, sent again next time.
        let reason = format!(
            "Marketo answered {status} without the {} this {} needs; not acknowledged, sent again by the next push",
            object.id_field(),
            object.name()
        );
        outcome(
            tx,
            run_id,
            op,
            if op.action == Action::Create {
                "create"
            } else {
                "update"
            },
            "failed",
            None,
            &json!([{"message": reason}]),
        )?;
        summary.skipped.push(Skipped {
            object: object.name(),
            key: op.key.clone(),
            source_id: op.source_id.clone(),
            reason,
        });
        return Ok(());
    }
    let action = match op.action {
        Action::Create => "create",
        Action::Update => "update",
        _ => "delete",
    };
    let codes: Vec<&str> = reasons
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x.get("code").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    outcome(
        tx,
        run_id,
        op,
        action,
        status,
        marketo_id.as_deref(),
        &reasons,
    )?;
    let key = op.key.clone().unwrap_or_default();
    match (delete, status) {
        (false, "created" | "updated") => {
            tx.prepare_cached("DELETE FROM mkto_refused WHERE object = ?1 AND key = ?2")?
                .execute(params![object.name(), key])?;
            // One created by this push had no id before.
            if matches!(object, Object::Lead | Object::Opportunity) && op.action == Action::Update {
                note_moved(tx, object, &key, marketo_id.as_deref())?;
            }
            tx.prepare_cached("INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (object, key) DO UPDATE SET payload = excluded.payload,
                     marketo_id = coalesce(excluded.marketo_id, mkto_ack.marketo_id),
                     run_id = excluded.run_id, acked_at = excluded.acked_at")?.execute(params![object.name(), key, op.payload, marketo_id, run_id, now()],
            )?;
            let counter = if status == "created" {
                &mut summary.created
            } else {
                &mut summary.updated
            };
            *counter.entry(object.name()).or_default() += 1;
        }
        // 1013 on delete: the record is already gone, which is what was asked.
        (true, "deleted") | (true, "skipped") if status == "deleted" || codes.contains(&"1013") => {
            tx.prepare_cached("DELETE FROM mkto_ack WHERE object = ?1 AND key = ?2")?
                .execute(params![object.name(), key])?;
            *summary.deleted.entry(object.name()).or_default() += 1;
        }
        _ => {
            let reason = reasons
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| {
                            format!(
                                "{} {}",
                                x.get("code").and_then(Value::as_str).unwrap_or("?"),
                                x.get("message").and_then(Value::as_str).unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| format!("Marketo answered status {status}"));
            let reason = redact(&reason).into_owned();
            // Refused for the values it carries: held back while they stay the same (plan.rs,
            // `sendable`). Not for another reason, which may pass by itself: a record it points
            // at sent meanwhile (718, a sales person), a field deleted in Marketo (1006, which
            // push handles by describing again), a failure on Marketo's side (1014).
            let parent_missing = object == Object::OpportunityRole
                && !delete
                && status == "skipped"
                && codes.iter().any(|c| PARENT_MISSING_CODES.contains(c));
            let held = codes.iter().any(|c| HELD_CODES.contains(c))
                || parent_missing && !resend_parents(tx, run_id, op, &key)?;
            if !delete && status == "skipped" && codes.contains(&SALES_PERSON_UNKNOWN) {
                resend_sales_person(tx, run_id, op)?;
            }
            if let Some(payload) = &op.payload
                && !delete
                && status == "skipped"
                && held
            {
                tx.prepare_cached(
                    "INSERT INTO mkto_refused (object, key, payload, reason, refused_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (object, key) DO UPDATE SET payload = excluded.payload,
                         reason = excluded.reason, refused_at = excluded.refused_at",
                )?
                .execute(params![object.name(), key, payload, reason, now()])?;
            }
            summary.skipped.push(Skipped {
                object: object.name(),
                key: op.key.clone(),
                source_id: op.source_id.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Notes a lead or opportunity whose Marketo id is not the one acknowledged before
/// (`mkto_moved`): it was deleted (or merged) in Marketo meanwhile, with its roles.
fn note_moved(
    tx: &Transaction<'_>,
    object: Object,
    key: &str,
    marketo_id: Option<&str>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO mkto_moved (object, key, old_id, new_id)
         SELECT object, key, marketo_id, ?3 FROM mkto_ack
         WHERE object = ?1 AND key = ?2 AND marketo_id IS NOT NULL AND marketo_id <> ?3
         ON CONFLICT (object, key) DO UPDATE SET new_id = excluded.new_id",
    )?
    .execute(params![object.name(), key, marketo_id])?;
    Ok(())
}

/// A role Marketo refused because its lead or opportunity is not there (1004 or 1013; which
/// code, and which of the two, is unconfirmed): the acknowledged lead or opportunity was
/// deleted or merged in Marketo since. Each of the two not acknowledged in this push is marked
/// to send again (its acknowledged payload emptied, so that it is pending; its Marketo id kept),
/// and the role stays pending, to go after them. Returns false when both were acknowledged in
/// this push already, or the role was refused before (and held back): then sending them again
/// would not help, and the role is held back as a refusal of its own values is. So a 1013 that
/// means something else sends the lead and opportunity again once, not once a day.
fn resend_parents(tx: &Transaction<'_>, run_id: i64, op: &Operation, key: &str) -> Result<bool> {
    let refused_before: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM mkto_refused WHERE object = 'opportunity_role' AND key = ?1)",
        )?
        .query_row([key], |r| r.get(0))?;
    if refused_before {
        return Ok(false);
    }
    let opportunity = RoleKey::parse(key).map(|k| k.opportunity);
    let marked = tx
        .prepare_cached(
            "UPDATE mkto_ack SET payload = '' WHERE run_id <> ?1
                 AND ((object = 'lead' AND key = ?2) OR (object = 'opportunity' AND key = ?3))",
        )?
        .execute(params![run_id, op.lead_key, opportunity])?;
    Ok(marked > 0)
}

/// After Marketo answered 718 to a record: it does not know the sales person the record names,
/// which it acknowledged before, so it was deleted there since. Marks that sales person to send
/// again (its acknowledged payload emptied, so that it is pending) when it was acknowledged
/// before this push and is still to export; the record, skipped, goes after it in the next
/// push (sales persons go first). Without this, the record met 718 in every push, as nothing
/// sent the sales person again.
fn resend_sales_person(tx: &Transaction<'_>, run_id: i64, op: &Operation) -> Result<()> {
    let named = op
        .payload
        .as_deref()
        .and_then(|payload| serde_json::from_str::<Value>(payload).ok())
        .and_then(|record| Some(record.get("externalSalesPersonId")?.as_str()?.to_string()));
    let Some(id) = named else {
        return Ok(());
    };
    tx.prepare_cached(
        "UPDATE mkto_ack SET payload = '' WHERE object = 'sales_person' AND key = ?1
                 AND run_id <> ?2 AND payload <> ''
                 AND EXISTS (SELECT 1 FROM export_row e
                     WHERE e.object = 'sales_person' AND e.key = mkto_ack.key)",
    )?
    .execute(params![id, run_id])?;
    Ok(())
}

/// Marks to send again the acknowledged roles of the leads and opportunities noted in
/// `mkto_moved` that are still to export (their acknowledged payload emptied, so that they are
/// pending; the others are deleted as before), and empties it,
/// in the push that acknowledged them (before its roles go) or, after a stop, in the next. An
/// opportunity's roles are a range of keys (`["opportunityid",...`); a lead's take one pass over
/// the acknowledged roles, as the lead is their key's second part. Returns how many were marked.
fn resend_roles_of_moved(conn: &mut Connection) -> Result<usize> {
    let tx = conn.transaction()?;
    let (leads, opportunities): (bool, bool) = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM mkto_moved WHERE object = 'lead'),
                EXISTS (SELECT 1 FROM mkto_moved WHERE object = 'opportunity')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut marked = 0;
    if opportunities {
        marked += tx.execute(
            "UPDATE mkto_ack SET payload = '' WHERE object = 'opportunity_role' AND payload <> ''
                 AND EXISTS (SELECT 1 FROM export_row e
                     WHERE e.object = 'opportunity_role' AND e.key = mkto_ack.key)
                 AND key IN (SELECT a.key FROM mkto_moved m CROSS JOIN mkto_ack a
                     ON a.object = 'opportunity_role'
                         AND a.key >= rtrim(json_array(m.key), ']') || ','
                         AND a.key < rtrim(json_array(m.key), ']') || ',' || char(127)
                     WHERE m.object = 'opportunity')",
            [],
        )?;
    }
    if leads {
        marked += tx.execute(
            "UPDATE mkto_ack SET payload = '' WHERE object = 'opportunity_role' AND payload <> ''
                 AND EXISTS (SELECT 1 FROM export_row e
                     WHERE e.object = 'opportunity_role' AND e.key = mkto_ack.key)
                 AND json_extract(key, '$[1]') IN (SELECT key FROM mkto_moved WHERE object = 'lead')",
            [],
        )?;
    }
    if leads || opportunities {
        tx.execute("DELETE FROM mkto_moved", [])?;
    }
    tx.commit()?;
    Ok(marked)
}

/// Records a record push could not send, and why.
fn not_sent(
    tx: &Transaction<'_>,
    run_id: i64,
    op: &Operation,
    action: &str,
    reason: String,
    summary: &mut Summary,
) -> Result<()> {
    outcome(
        tx,
        run_id,
        op,
        action,
        "not_sent",
        None,
        &json!([{"message": reason}]),
    )?;
    summary.skipped.push(Skipped {
        object: op.object.name(),
        key: op.key.clone(),
        source_id: op.source_id.clone(),
        reason,
    });
    Ok(())
}

fn outcome(
    tx: &Transaction<'_>,
    run_id: i64,
    op: &Operation,
    action: &str,
    status: &str,
    marketo_id: Option<&str>,
    reasons: &Value,
) -> Result<()> {
    tx.prepare_cached("INSERT INTO push_outcome (run_id, object, key, action, status, marketo_id, reasons, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![run_id, op.object.name(), op.key.as_deref().or(op.source_id.as_deref()), action, status, marketo_id, crate::redact::json(reasons), now()],
    )?;
    Ok(())
}

fn record_calls(conn: &mut Connection, run_id: i64, calls: &[CallLog]) -> Result<()> {
    let tx = conn.transaction()?;
    insert_calls(&tx, run_id, calls)?;
    tx.commit()?;
    Ok(())
}

/// How long ago the REST calls among the newest `rows` of `api_call` were made, by whatever
/// command. A call's `at` is stamped to the second when its answer is recorded, after Marketo
/// counted it: taken as the end of that second, it errs late, keeping the call in the window
/// longer than Marketo does. A stamp that cannot be read is taken as now.
pub(crate) fn logged_call_ages(conn: &Connection, rows: usize) -> Result<Vec<Duration>> {
    let now = chrono::Utc::now();
    let stamps: Vec<String> = conn
        .prepare_cached(
            "SELECT at FROM (SELECT at, path FROM api_call ORDER BY call_id DESC LIMIT ?1)
             WHERE path LIKE '/rest/%'",
        )?
        .query_map([rows as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(stamps
        .iter()
        .map(|at| {
            chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%SZ")
                .ok()
                .and_then(|at| {
                    (now - at.and_utc() - chrono::Duration::seconds(1))
                        .to_std()
                        .ok()
                })
                .unwrap_or_default()
        })
        .collect())
}

pub(crate) fn insert_calls(tx: &Transaction<'_>, run_id: i64, calls: &[CallLog]) -> Result<()> {
    for call in calls {
        tx.prepare_cached("INSERT INTO api_call (run_id, method, path, records, http_status, error_code, attempt, duration_ms, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")?.execute(params![
                run_id,
                call.method,
                call.path,
                call.records as i64,
                call.http_status,
                call.error_code.as_deref().map(redact),
                call.attempt,
                call.duration.as_millis() as i64,
                now()
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_pair_by_seq_whatever_their_order() {
        let results = [
            json!({"seq": 1, "status": "created", "marketoGUID": "b"}),
            json!({"seq": 0, "status": "updated", "marketoGUID": "a"}),
        ];
        let paired = pair_results(Object::Opportunity, 2, &results).unwrap();
        assert_eq!(paired[0]["marketoGUID"], "a");
        assert_eq!(paired[1]["marketoGUID"], "b");
    }

    #[test]
    fn results_that_cannot_be_paired_are_refused_with_the_reason() {
        let one = |seq: Value| json!({"seq": seq, "status": "created"});
        for (results, why) in [
            (vec![one(json!(0))], "1 results for 2 records"),
            (
                vec![one(json!(0)), one(json!(0))],
                "seq 0 is answered twice",
            ),
            (vec![one(json!(0)), one(json!(7))], "seq 7 is out of range"),
            (
                vec![one(json!(0)), json!({"status": "created"})],
                "a result has no seq",
            ),
            (vec![one(json!(0)), one(json!("1"))], "a result has no seq"),
        ] {
            let err = pair_results(Object::Company, 2, &results).unwrap_err();
            assert_eq!(err, why);
        }
    }

    #[test]
    fn lead_results_pair_by_position_after_the_count_is_checked() {
        let results = [
            json!({"id": 5, "status": "created"}),
            json!({"id": 6, "status": "updated"}),
        ];
        let paired = pair_results(Object::Lead, 2, &results).unwrap();
        assert_eq!(paired[1]["id"], 6);
        assert!(pair_results(Object::Lead, 3, &results).is_err());
    }

    #[test]
    fn ids_must_have_the_shape_their_object_needs() {
        assert_eq!(
            marketo_id(Object::Lead, &json!({"id": 42})).as_deref(),
            Some("42")
        );
        for result in [
            json!({}),
            json!({"id": null}),
            json!({"id": 0}),
            json!({"id": -3}),
            json!({"id": "42"}),
            json!({"id": 1.5}),
        ] {
            assert_eq!(marketo_id(Object::Lead, &result), None, "{result}");
        }
        assert_eq!(
            marketo_id(Object::OpportunityRole, &json!({"marketoGUID": "g-1"})).as_deref(),
            Some("g-1")
        );
        assert_eq!(
            marketo_id(Object::Opportunity, &json!({"marketoGUID": " "})),
            None
        );
        assert_eq!(marketo_id(Object::Opportunity, &json!({"id": 3})), None);
    }

    #[test]
    fn the_roles_of_a_moved_lead_or_opportunity_are_marked_to_send_again_and_no_other() {
        let mut conn = crate::db::open_scratch().unwrap();
        // Roles on o1 and o10 (a key with o1's as a prefix but for its quote), of leads a and b;
        // o1 and lead b moved. A role of o1 no longer exported is left to be deleted.
        let roles = [
            r#"["o1","a","r"]"#,
            r#"["o1","c","r"]"#,
            r#"["o10","a","r"]"#,
            r#"["o2","b","r"]"#,
            r#"["o2","a","r"]"#,
        ];
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'push', '[]', 'now');
             INSERT INTO mkto_moved (object, key, old_id, new_id) VALUES
                 ('opportunity', 'o1', 'g1', 'g2'), ('lead', 'b', '1', '2');",
        )
        .unwrap();
        for key in roles {
            conn.execute(
                "INSERT INTO mkto_ack (object, key, payload, run_id, acked_at)
                 VALUES ('opportunity_role', ?1, '{}', 1, 'now')",
                [key],
            )
            .unwrap();
            if !key.contains("\"c\"") {
                conn.execute(
                    "INSERT INTO export_row (object, root, key, source_id, payload, pending)
                     VALUES ('opportunity_role', 'x', ?1, 's', '{}', 0)",
                    [key],
                )
                .unwrap();
            }
        }
        assert_eq!(resend_roles_of_moved(&mut conn).unwrap(), 2);
        let pending = crate::db::texts(
            &conn,
            "SELECT key FROM export_row WHERE pending = 1 ORDER BY key",
            [],
        );
        assert_eq!(pending, [roles[0], roles[3]]);
        assert_eq!(
            conn.query_row("SELECT count(*) FROM mkto_moved", [], |r| r
                .get::<_, i64>(0))
                .unwrap(),
            0
        );
        assert_eq!(resend_roles_of_moved(&mut conn).unwrap(), 0, "nothing left");
    }
}
