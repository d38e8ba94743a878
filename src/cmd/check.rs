//! `oppsync check [--json]`: prints `check::run`'s checklist, one line per item with ✓, ! (a
//! warning) or ✗ and the fix; exits 0 when nothing failed, 2 for a misconfiguration, 1 when a
//! service could not be reached.

use anyhow::{Result, anyhow};
use serde_json::json;

use super::Context;
use crate::check;
use crate::exit::{Outcome, usage};

pub(crate) fn run(ctx: &mut Context, json_output: bool) -> Result<Outcome> {
    // The scratch database of a first check has no run at all.
    let has_database = ctx.conn.path().is_some_and(|p| !p.is_empty());
    let items = check::run(&ctx.config, has_database.then_some(&mut ctx.conn));
    let failed: Vec<&check::Item> = items.iter().filter(|i| i.verdict == "fail").collect();
    let code = match (failed.is_empty(), failed.iter().any(|i| i.setup)) {
        (true, _) => 0,
        (false, true) => 2,
        (false, false) => 1,
    };
    if json_output {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"items": items, "exit_code": code}))?
        );
    } else {
        for item in &items {
            let mark = match item.verdict {
                "pass" => "✓",
                "warn" => "!",
                _ => "✗",
            };
            outln!("{mark} {}: {}", item.name, item.detail);
            if let (Some(fix), false) = (&item.fix, item.verdict == "pass") {
                outln!("    fix: {fix}");
            }
        }
    }
    let summary = format!(
        "{} of {} checks failed (see above)",
        failed.len(),
        items.len()
    );
    match code {
        0 => Ok(Outcome::Done),
        2 => Err(usage(summary)),
        _ => Err(anyhow!(summary)),
    }
}
