//! `oppsync plan [--json]`: what push would send, per object and action, and the calls it needs.

use anyhow::Result;
use serde_json::{Value, json};

use super::Context;
use crate::exit::Outcome;
use crate::plan::{self, Object, Plan};

pub(crate) fn run(ctx: &mut Context, json_output: bool) -> Result<Outcome> {
    let plan = plan::load(&mut ctx.conn, &ctx.config)?;
    let report = report(&plan);
    ctx.counts = report.clone();
    if json_output {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&plan);
    }
    Ok(Outcome::Done)
}

/// The `plan --json` contract (also stored as the run's counts).
pub(crate) fn report(plan: &Plan) -> Value {
    let objects: serde_json::Map<String, Value> = Object::ALL
        .iter()
        .map(|o| (o.name().to_string(), json!(plan.counts(*o))))
        .collect();
    let calls = plan.calls();
    let skipped: Vec<Value> = plan
        .skipped()
        .map(|op| json!({"object": op.object.name(), "key": op.key, "source_id": op.source_id, "reason": op.reason}))
        .collect();
    json!({
        "objects": objects,
        "calls": calls,
        "total_calls": calls.values().sum::<usize>(),
        "skipped": skipped,
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
    for op in plan.skipped() {
        outln!(
            "skip {} {}: {}",
            op.object.name(),
            op.key.as_deref().or(op.source_id.as_deref()).unwrap_or("?"),
            op.reason.as_deref().unwrap_or("")
        );
    }
}
