//! `oppsync push [--dry-run]`: send the plan to Marketo, or show the batches it would send.

use anyhow::Result;
use serde_json::json;

use super::Context;
use super::plan::LISTED_SKIPS;
use crate::exit::Outcome;
use crate::export::client::MarketoClient;
use crate::export::push::{self, Skipped, Summary};
use crate::plan::Plan;
use crate::problem::{self, Seen};

/// At most this many skipped records are listed in the run's counts (`skipped`), which are
/// kept for as long as the run: a push that could not send many records, cycle after cycle,
/// would otherwise store them all again in every run. All are in `push_outcome`.
const LISTED_IN_COUNTS: usize = 1000;

pub(crate) fn run(ctx: &mut Context, dry_run: bool) -> Result<Outcome> {
    if dry_run {
        let plan = super::load_plan(ctx)?;
        print_dry_run(&plan);
        return Ok(Outcome::Done);
    }
    let mut client = super::marketo_client(ctx)?;
    let mut plan = super::load_plan(ctx)?;
    send(ctx, &mut plan, &mut client)
}

/// Sends the plan, prints what happened, and stores the summary as the run's counts.
pub(crate) fn send(
    ctx: &mut Context,
    plan: &mut Plan,
    client: &mut MarketoClient,
) -> Result<Outcome> {
    let say = |line: String| crate::progress::say(&line);
    let to = push::Destination {
        client,
        mapping: &ctx.config.mapping,
        max_in_flight: ctx.config.marketo.max_in_flight as usize,
    };
    let mut summary = push::push(&mut ctx.conn, ctx.run_id, plan, &to, &say)?;
    // The push went through the whole plan: what it did not report is fine now. The records
    // held back after a refusal are still refused, with the answer recorded then: their
    // problems stand, without a line in the run's counts each cycle.
    let seen_as =
        |object: &str, key: &Option<String>, source_id: &Option<String>, reason: &str| Seen {
            subject: object.to_string(),
            key: key
                .clone()
                .or_else(|| source_id.clone())
                .unwrap_or_default(),
            reason: reason.to_string(),
        };
    let seen: Vec<Seen> = summary
        .skipped
        .iter()
        .map(|s| seen_as(s.object, &s.key, &s.source_id, &s.reason))
        .chain(plan.held().map(|op| {
            let reason = op.reason.as_deref().unwrap_or_default();
            seen_as(op.object.name(), &op.key, &op.source_id, reason)
        }))
        .collect();
    // The records the plan cannot send: only the roots whose rows changed are checked again.
    let (unsendable, new_unsendable) =
        problem::check_unsendable(&mut ctx.conn, ctx.run_id, LISTED_IN_COUNTS)?;
    let mut is_new = problem::record_each(&mut ctx.conn, ctx.run_id, "push", &seen)?;
    let new = is_new.iter().filter(|new| **new).count() + new_unsendable;
    problem::close_unseen(&ctx.conn, ctx.run_id, "push")?;
    // The plan's skips, but for those push reported (over the request limit), counted with the
    // rest of what it could not send.
    summary.skipped_total =
        plan.skip_count().saturating_sub(plan.too_large().count()) + summary.skipped.len();
    is_new.truncate(summary.skipped.len());
    is_new.resize(summary.skipped.len() + unsendable.len(), true);
    summary
        .skipped
        .extend(unsendable.into_iter().map(|u| Skipped {
            object: u.object,
            key: u.key,
            source_id: Some(u.source_id),
            reason: u.reason,
        }));
    print_summary(ctx, &summary)?;
    let listed = summary.skipped.iter().zip(&is_new).filter(|(_, new)| **new);
    print_new_skips(ctx, listed.map(|(skip, _)| skip), new);
    summary.skipped.truncate(LISTED_IN_COUNTS);
    ctx.counts = json!(summary);
    ctx.counts["new_problems"] = json!(new);
    if summary.skipped_total > 0 && new == 0 {
        ctx.say(
            "no new problem: the skipped records stand since earlier runs (see `oppsync status`)",
        );
    }
    Ok(if new > 0 {
        Outcome::DoneWithRejects
    } else {
        Outcome::Done
    })
}

/// Prints the counts, and what Marketo answered with an error and had sent again.
fn print_summary(ctx: &Context, summary: &Summary) -> Result<()> {
    let total = |map: &std::collections::BTreeMap<&str, usize>| map.values().sum::<usize>();
    if summary.calls == 0 {
        ctx.say("nothing to push: Marketo already holds every change (no REST call made)");
        return Ok(());
    }
    ctx.say(format!(
        "pushed with {} REST calls: {} created, {} updated, {} deleted, {} skipped",
        summary.calls,
        total(&summary.created),
        total(&summary.updated),
        total(&summary.deleted),
        summary.skipped_total
    ));
    // Each wait and retry is a line on a terminal and with -v elsewhere; the log has this one.
    // A 606 from a lone oppsync means another integration spends the same allowance.
    let (errors, retries): (Option<String>, i64) = ctx.conn.query_row(
        "SELECT (SELECT group_concat(code || ' ×' || n, ', ') FROM (
                     SELECT coalesce(error_code, 'HTTP ' || http_status, 'no answer') AS code,
                            count(*) AS n
                     FROM api_call
                     WHERE run_id = ?1 AND path LIKE '/rest/%'
                       AND (error_code IS NOT NULL OR http_status IS NULL OR http_status >= 400)
                     GROUP BY 1 ORDER BY 2 DESC, 1)),
                (SELECT count(*) FROM api_call
                 WHERE run_id = ?1 AND path LIKE '/rest/%' AND attempt > 1)",
        [ctx.run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if let Some(errors) = errors {
        let again = match retries {
            1 => "1 call was".to_string(),
            n => format!("{n} calls were"),
        };
        ctx.say(format!(
            "Marketo answered errors ({errors}); {again} sent again (each call is in table \
             api_call; -v shows each wait and retry)"
        ));
    }
    Ok(())
}

/// Lists the first of the `new` records skipped for a new problem: a problem seen before
/// stands, in `status`, and a `sync --every` does not repeat it every cycle.
fn print_new_skips<'a>(ctx: &Context, skips: impl Iterator<Item = &'a Skipped>, new: usize) {
    for skip in skips.take(LISTED_SKIPS) {
        crate::progress::warn(&format!(
            "skipped {} {}: {}",
            skip.object,
            skip.key
                .as_deref()
                .or(skip.source_id.as_deref())
                .unwrap_or("?"),
            skip.reason
        ));
    }
    if new > LISTED_SKIPS {
        crate::progress::warn(&format!(
            "skipped: {} more; see: sqlite3 {} \"select * from push_outcome where run_id = {} and status <> 'created' and status <> 'updated' and status <> 'deleted'\"",
            new - LISTED_SKIPS,
            ctx.conn.path().unwrap_or("oppsync.db"),
            ctx.run_id
        ));
    }
}

pub(crate) fn print_dry_run(plan: &Plan) {
    for object in plan.describes() {
        outln!(
            "would describe {} first (/rest{}): no describe of them is stored within marketo.describe_max_age_hours",
            object.plural(),
            object.describe_path()
        );
    }
    let batches = plan.batches();
    for batch in batches {
        outln!(
            "would send {} {}{}: {} records, about {} bytes",
            batch.object.plural(),
            if batch.deletes { "delete" } else { "upsert" },
            if batch.deletes {
                ""
            } else {
                " (createOrUpdate)"
            },
            batch.records,
            batch.bytes
        );
    }
    let skipped = plan.skip_count();
    outln!(
        "{} REST calls; {skipped} records would be skipped (see `oppsync plan`)",
        plan.calls().values().sum::<usize>()
    );
}
