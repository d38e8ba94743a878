//! `oppsync plan [--json]`: what push would send, per object and action, and the calls it needs.

use std::ops::ControlFlow;

use anyhow::Result;
use rusqlite::Connection;
use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use super::Context;
use crate::exit::Outcome;
use crate::plan::{self, Object, Plan};

pub(crate) fn run(ctx: &mut Context, json_output: bool) -> Result<Outcome> {
    let plan = plan::load(&mut ctx.conn, &ctx.config)?;
    if json_output {
        let report = Report {
            head: report(&plan),
            skipped: Skipped(&ctx.conn, &plan),
        };
        crate::progress::write_stdout_json(&report)?;
    } else {
        print_human(&plan);
        print_skipped(&ctx.conn, &plan)?;
    }
    Ok(Outcome::Done)
}

/// The `plan --json` document: the report, then every skipped record, read as it is written.
#[derive(Serialize)]
struct Report<'c> {
    #[serde(flatten)]
    head: Value,
    skipped: Skipped<'c>,
}

/// The skipped records, serialized straight from the export rows (`plan::each_skipped`).
struct Skipped<'c>(&'c Connection, &'c Plan);

impl Serialize for Skipped<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        let mut failed = None;
        let read = plan::each_skipped(self.0, self.1, |op| {
            let element = json!({"object": op.object.name(), "key": op.key, "source_id": op.source_id, "reason": op.reason});
            match seq.serialize_element(&element) {
                Ok(()) => ControlFlow::Continue(()),
                Err(err) => {
                    failed = Some(err);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(err) = failed {
            return Err(err);
        }
        read.map_err(|err| S::Error::custom(format!("{err:#}")))?;
        seq.end()
    }
}

/// At most this many skipped records are listed on the terminal, by `plan` and by `push` (its
/// new problems); `plan --json` lists all, and `push_outcome` holds all.
pub(super) const LISTED_SKIPS: usize = 20;

/// Lists the first skipped records, and how many more there are.
pub(crate) fn print_skipped(conn: &Connection, plan: &Plan) -> Result<()> {
    let mut listed = 0;
    plan::each_skipped(conn, plan, |op| {
        if listed == LISTED_SKIPS {
            return ControlFlow::Break(());
        }
        listed += 1;
        outln!(
            "skip {} {}: {}",
            op.object.name(),
            op.key.as_deref().or(op.source_id.as_deref()).unwrap_or("?"),
            op.reason.as_deref().unwrap_or("")
        );
        ControlFlow::Continue(())
    })?;
    let total = plan.skip_count();
    if total > listed {
        outln!(
            "skip: {} more; `oppsync plan --json` lists every one",
            total - listed
        );
    }
    Ok(())
}

/// The `plan --json` contract but for `skipped`, which `Skipped` adds as it is written.
pub(crate) fn report(plan: &Plan) -> Value {
    let objects: serde_json::Map<String, Value> = Object::ALL
        .iter()
        .map(|o| (o.name().to_string(), json!(plan.counts(*o))))
        .collect();
    let calls = plan.calls();
    json!({
        "objects": objects,
        "calls": calls,
        "total_calls": calls.values().sum::<usize>(),
    })
}

pub(crate) fn print_human(plan: &Plan) {
    outln!(
        "{:<14} {:>7} {:>7} {:>10} {:>7} {:>7}",
        "",
        "create",
        "update",
        "unchanged",
        "delete",
        "skip"
    );
    for object in Object::ALL {
        let c = plan.counts(object);
        outln!(
            "{:<14} {:>7} {:>7} {:>10} {:>7} {:>7}",
            object.plural(),
            c.create,
            c.update,
            c.unchanged,
            c.delete,
            c.skip
        );
    }
    let calls = plan.calls();
    let total: usize = calls.values().sum();
    if total == 0 {
        outln!("nothing to send: push would make no REST call");
    } else {
        let detail = calls
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        outln!("REST calls needed: {total} ({detail}), plus one identity call");
    }
}
