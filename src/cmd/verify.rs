//! `oppsync verify [--json]`: the stored export rows against a fresh evaluation of the views.

use anyhow::{Result, bail};
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::export_rows;

/// At most this many differing rows are listed; the count covers them all.
const LISTED: usize = 20;

pub(crate) fn run(ctx: &mut Context, json_output: bool) -> Result<Outcome> {
    let rows: i64 = ctx
        .conn
        .query_row("SELECT count(*) FROM main.export_row", [], |r| r.get(0))?;
    if !export_rows::is_current(&ctx.conn, &ctx.config)? {
        // Evaluated before the last staged changes or with other settings: the next pull or
        // push re-evaluates them before anything reads them, so there is nothing to compare.
        let note = "the stored export rows are not current (records were staged since, or the rules or mappings changed); the next pull or push brings them up to date";
        if json_output {
            outln!(
                "{}",
                json!({"current": false, "rows": rows, "differences": [], "note": note})
            );
        } else {
            ctx.say(note);
        }
        return Ok(Outcome::Done);
    }
    let differences = export_rows::verify(&mut ctx.conn, &ctx.config)?;
    if json_output {
        outln!(
            "{}",
            json!({"current": true, "rows": rows, "differences": differences})
        );
    } else {
        for d in differences.iter().take(LISTED) {
            outln!(
                "{}: {} {} (source {})",
                d.side,
                d.object,
                d.key.as_deref().unwrap_or("(no key)"),
                d.source_id
            );
        }
        if differences.len() > LISTED {
            outln!("... and {} more", differences.len() - LISTED);
        }
    }
    if !differences.is_empty() {
        bail!(
            "{} export rows differ from a fresh evaluation of the views: run `oppsync pull --full` to evaluate them in full, and please report the records listed",
            differences.len()
        );
    }
    if !json_output {
        ctx.say(format!(
            "the {rows} stored export rows equal a fresh evaluation of the views"
        ));
    }
    Ok(Outcome::Done)
}
