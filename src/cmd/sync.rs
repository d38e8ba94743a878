//! `oppsync sync [--fixtures DIR] [--full] [--dry-run]`: pull (from a fixture folder or the
//! live Web API), then push. The Marketo settings are checked before anything is pulled. With
//! `--dry-run` the pull stages as usual and push only shows what it would send.
//!
//! `--every DURATION [--max-cycles N]`: one long-running process, a cycle (one recorded sync
//! run) per interval, the writer lock held in between. SIGTERM or SIGINT ends it at the next
//! safe point with exit 0. A failing cycle is logged and the next one waits longer (doubling,
//! up to an hour, never a crash loop); after Marketo's 607 (daily quota) the next cycle waits
//! for the quota's reset. Bad settings end it at once (exit 2): waiting cannot fix them.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use chrono::{Timelike, Utc};
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::export::client::{CallLog, MarketoClient};
use crate::export::push::insert_calls;
use crate::export::recheck;

pub(crate) fn run(
    ctx: &mut Context,
    fixtures: Option<&Path>,
    full: bool,
    dry_run: bool,
) -> Result<Outcome> {
    let mut client = if dry_run {
        None
    } else {
        Some(super::marketo_client(ctx)?)
    };
    let pulled = match fixtures {
        Some(dir) => super::pull::run(ctx, dir, full),
        None => super::pull::run_live(ctx, full),
    };
    let pull_counts = std::mem::take(&mut ctx.counts);
    let pushed = pulled.and_then(|pulled| {
        crate::stop::check()?;
        let mut plan = super::load_plan(ctx)?;
        let pushed = match &mut client {
            Some(client) => super::push::send(ctx, &mut plan, client)?,
            None => {
                super::push::print_dry_run(&plan);
                Outcome::Done
            }
        };
        Ok((pulled, pushed))
    });
    // Nested as `run::prune` reads them, whichever step failed: what the pull staged (so that
    // an old cycle that staged nothing can go), and what the push sent once it has.
    let push_counts = std::mem::take(&mut ctx.counts);
    ctx.counts = json!({"pull": pull_counts});
    if pushed.is_ok() || !push_counts.is_null() {
        ctx.counts["push"] = push_counts;
    }
    let (pulled, pushed) = pushed?;
    let sampled_new = match &client {
        Some(client) => sample_if_due(ctx, client)?,
        None => false,
    };
    Ok(
        if pulled == Outcome::Done && pushed == Outcome::Done && !sampled_new {
            Outcome::Done
        } else {
            Outcome::DoneWithRejects
        },
    )
}

/// Every `[marketo] sample_every_hours`, after the push: a random sample of the acknowledged
/// leads, opportunities, companies and roles looked up in Marketo (`recheck::sample`, a query
/// each), its calls logged and what it found stored (`marketo_sample`) and said; a warning when
/// Marketo lacks some, naming `oppsync recheck` (with `--roles` when only roles are missing).
/// Returns whether that is new (the sample before found none missing), which makes the cycle
/// exit 3.
/// A sample that cannot be looked up is a warning too, not a failed cycle: the push went
/// through. One a stop cut short (in a wait for Marketo's rate window) is not stored, so that
/// the next cycle makes it, rather than a day later.
fn sample_if_due(ctx: &mut Context, client: &MarketoClient) -> Result<bool> {
    if !recheck::sample_due(&ctx.conn, ctx.config.marketo.sample_every_hours)? {
        return Ok(false);
    }
    let mut calls = Vec::new();
    let sampled = recheck::sample(&ctx.conn, client, &mut calls);
    let stopped = sampled.as_ref().is_err_and(crate::stop::is_stopped);
    let tx = ctx.conn.transaction()?;
    insert_calls(&tx, ctx.run_id, &calls)?;
    let new = !stopped && recheck::store_sample(&tx, ctx.run_id, &sampled)?;
    tx.commit()?;
    if stopped {
        ctx.say("the sample of what Marketo holds is left to the next sync: stopped on request");
        return Ok(false);
    }
    let sampled = match &sampled {
        Ok(sampled) => sampled,
        Err(err) => {
            crate::progress::warn(&format!(
                "warning: the sample of what Marketo holds could not be looked up: {}",
                crate::exit::error_line(err)
            ));
            return Ok(false);
        }
    };
    let missing: usize = sampled.iter().map(|s| s.missing).sum();
    ctx.counts["sample"] = json!({"missing": missing, "calls": CallLog::rest_count(&calls)});
    // "a, b and c".
    let each = |told: &dyn Fn(&recheck::Sampled) -> String| -> String {
        let mut parts: Vec<String> = sampled.iter().map(told).collect();
        let last = parts.pop().unwrap_or_default();
        if parts.is_empty() {
            last
        } else {
            format!("{} and {last}", parts.join(", "))
        }
    };
    if missing > 0 {
        let told = each(&|s| format!("{} of {} {}", s.missing, s.asked, s.object.plural()));
        let recheck = recheck::recheck_command(recheck::more_than_roles_missing(sampled));
        crate::progress::warn(&format!(
            "warning: Marketo lacks {told} sampled at random of those it acknowledged (deleted or merged there): run `{recheck}` to find them all, then push"
        ));
    } else if !sampled.is_empty() {
        let asked = each(&|s| format!("{} {}", s.asked, s.object.plural()));
        ctx.say(format!(
            "sampled what Marketo holds: all {asked} asked about are there"
        ));
    }
    Ok(new)
}

/// Said instead of when the next cycle starts, after the last of `--max-cycles`.
const LAST: &str = "that was the last of --max-cycles";

/// The longest wait after failing cycles.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Runs `cycle` every `interval` (plus up to 5% of jitter) until a stop is asked for (through
/// the handlers the caller `stop::install`ed) or `max_cycles` have run; returns the last
/// cycle's outcome, or `Done` when stopped. Between cycles `waiting` is told how the last one
/// went and when the next starts (the writer lock's note, which `status` shows), and `None`
/// when a cycle starts.
pub(crate) fn every(
    interval: Duration,
    max_cycles: Option<u32>,
    mut cycle: impl FnMut(u32) -> Result<Outcome>,
    waiting: impl Fn(Option<&str>),
) -> Result<Outcome> {
    let mut jitter = crate::net::Backoff::new(interval);
    let mut failures = 0u32;
    let mut number = 0u32;
    loop {
        number += 1;
        let last = max_cycles.is_some_and(|max| number >= max);
        // When the next cycle starts, said unless this was the last.
        let next_cycle = |when: String| if last { LAST.to_string() } else { when };
        log(&format!("cycle {number}: pull, then push"));
        waiting(None);
        let result = cycle(number);
        let (wait, how) = match &result {
            Ok(outcome) => {
                failures = 0;
                log(&format!(
                    "cycle {number}: done, exit code {}",
                    outcome.code()
                ));
                (
                    interval + jitter.jitter(interval / 20),
                    format!("cycle {number} done, exit code {}", outcome.code()),
                )
            }
            Err(err) if crate::stop::is_stopped(err) => {
                log(&format!("cycle {number}: {err:#}"));
                return Ok(Outcome::Done);
            }
            Err(err) if crate::exit::is_usage(err) => return result,
            Err(err) if is_daily_quota(err) => {
                failures += 1;
                let wait = until_quota_reset();
                let next = next_cycle(format!(
                    "the next cycle waits {} min for its reset",
                    wait.as_secs() / 60
                ));
                log(&format!(
                    "cycle {number}: Marketo's daily quota is spent; {next}"
                ));
                (
                    wait,
                    format!("cycle {number} found Marketo's daily quota spent"),
                )
            }
            Err(err) => {
                failures += 1;
                let wait = interval
                    .saturating_mul(1 << failures.min(12))
                    .min(MAX_BACKOFF.max(interval));
                let next = next_cycle(format!("next cycle in {} s", wait.as_secs()));
                log(&format!(
                    "cycle {number} failed ({failures} in a row): {}; {next}",
                    crate::exit::error_line(err),
                ));
                (
                    wait,
                    format!("cycle {number} failed ({failures} in a row; see `oppsync status`)"),
                )
            }
        };
        if crate::stop::requested() || last {
            if crate::stop::requested() && result.is_ok() {
                // The stop came as the cycle ended: said, or the log would end at its last line.
                log(&format!("stopped on request after cycle {number}"));
            }
            return result.or_else(|err| {
                if crate::stop::is_stopped(&err) {
                    Ok(Outcome::Done)
                } else {
                    Err(err)
                }
            });
        }
        let next_at = chrono::Duration::from_std(wait)
            .ok()
            .and_then(|wait| Utc::now().checked_add_signed(wait))
            .map_or_else(String::new, |at| {
                at.format(" at %Y-%m-%dT%H:%M:%SZ").to_string()
            });
        waiting(Some(&format!(
            "`sync --every {}` between cycles: {how}; cycle {} starts{next_at}",
            every_text(interval),
            number + 1
        )));
        if !crate::stop::sleep(wait) {
            log("stopped on request between cycles");
            return Ok(Outcome::Done);
        }
    }
}

/// An interval as `--every` takes it: 30s, 5m, 1h, 1h30m.
fn every_text(interval: Duration) -> String {
    let s = interval.as_secs();
    let parts = [(s / 3600, "h"), (s % 3600 / 60, "m"), (s % 60, "s")];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_string()
    } else {
        text
    }
}

/// One line, stamped with the time (RFC 3339), for logs a scheduler keeps.
fn log(line: &str) {
    crate::progress::log(line);
}

fn is_daily_quota(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<crate::export::client::Failure>(),
            Some(crate::export::client::Failure::DailyQuota(_))
        )
    })
}

/// Until Marketo's daily quota resets: midnight US Central. The reference gives the reset as
/// 12:00 AM CST without saying whether it follows daylight saving time; 06:00 UTC is midnight
/// CST and 1 AM CDT, so waiting for it is never too early (at worst an hour late in summer).
fn until_quota_reset() -> Duration {
    let now = Utc::now();
    let today = now
        .with_hour(6)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0));
    let next = match today {
        Some(reset) if reset > now => reset,
        Some(reset) => reset + chrono::Duration::days(1),
        None => now + chrono::Duration::hours(24),
    };
    (next - now).to_std().unwrap_or(Duration::from_secs(3600)) + Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_is_shown_as_every_takes_it() {
        for text in ["30s", "5m", "1h", "1h30m", "2m30s", "1h0m5s", "24h"] {
            let interval = crate::cli::parse_every(text).unwrap();
            let shown = every_text(interval);
            assert_eq!(
                crate::cli::parse_every(&shown),
                Ok(interval),
                "{text} -> {shown}"
            );
        }
        assert_eq!(every_text(Duration::from_secs(5400)), "1h30m");
        assert_eq!(every_text(Duration::from_secs(3605)), "1h5s");
    }
}
