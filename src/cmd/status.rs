//! `oppsync status [--json] [--stale-after DURATION]`: prints `status::Status`, then, with
//! `--stale-after`, fails when no push or sync finished within DURATION (a monitor's check).

use anyhow::{Result, bail};

use super::Context;
use crate::exit::Outcome;
use crate::status::{self, Status};

pub(crate) fn run(
    ctx: &mut Context,
    json: bool,
    stale_after: Option<std::time::Duration>,
) -> Result<Outcome> {
    let path = ctx.conn.path().map(std::path::PathBuf::from);
    let writer = path.as_deref().and_then(crate::db::writer);
    let unknown = match (&writer, &path) {
        (None, Some(path)) => crate::db::writer_unknown(path),
        _ => None,
    };
    let status = status::read(&mut ctx.conn, writer.as_ref(), unknown, &ctx.config)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_human(&status);
    }
    if let Some(limit) = stale_after
        && let Some(stale) = staleness(&status, limit, chrono::Utc::now())
    {
        bail!(stale);
    }
    Ok(Outcome::Done)
}

/// Why the synced state is stale: no push or sync finished within `limit` of `now` (the last
/// successful one, or none, and the newest failure since). `None` when one did.
fn staleness(
    s: &Status,
    limit: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let last_success = s
        .last_success
        .as_ref()
        .and_then(|r| Some((r, r.finished_at.as_deref()?)));
    let last = match last_success {
        Some((r, finished_at)) => {
            // A time it cannot read counts as long ago, said so rather than taken as fresh; one
            // ahead of this clock, as just now.
            let age = chrono::DateTime::parse_from_rfc3339(finished_at)
                .ok()
                .map(|at| {
                    (now - at.with_timezone(&chrono::Utc))
                        .to_std()
                        .unwrap_or_default()
                });
            if age.is_some_and(|age| age <= limit) {
                return None;
            }
            let ago = age.map_or_else(|| "?".to_string(), duration_text);
            format!(
                "the last push or sync that finished, #{} {}, did at {finished_at} ({ago} ago)",
                r.run_id, r.command
            )
        }
        None => "no push or sync has finished yet".to_string(),
    };
    // A failure from before the last success is not why it is stale.
    let newest_failure = s.last_errors.first().filter(|r| {
        last_success.is_none_or(|(_, finished_at)| r.started_at.as_str() > finished_at)
    });
    let failure = match newest_failure {
        Some(r) => format!(
            "; the newest failure: #{} {} at {}: {}",
            r.run_id,
            r.command,
            r.started_at,
            r.message.as_deref().unwrap_or("")
        ),
        None => String::new(),
    };
    Some(format!(
        "stale: none within --stale-after {}: {last}{failure}",
        duration_text(limit)
    ))
}

fn print_human(s: &Status) {
    outln!("schema version {}", s.schema_version);
    outln!("staged (live / deleted):");
    for c in &s.staged {
        // Change tracking off for a table is what an operator must act on (`check` says how):
        // its deletes reach oppsync only through `pull --full`.
        let how = match (c.pull_mode.as_deref(), c.has_modifiedon) {
            (Some("watermark"), true) => {
                "  (change tracking off: pulled by modifiedon; deletes need `pull --full`)"
            }
            (Some("watermark"), false) => "  (change tracking off: every pull reads it in full)",
            _ => "",
        };
        outln!("  {:<16} {:>8} / {}{how}", c.entity_set, c.live, c.deleted);
    }
    let d = &s.derived;
    outln!(
        "derived: {} opportunities in scope ({} with an account), {} contact roles",
        d.opportunities,
        d.opportunities_with_account,
        d.contact_roles
    );
    outln!("recent runs:");
    for r in &s.runs {
        let args = r
            .args
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let counts = if r.counts.as_object().is_some_and(|o| !o.is_empty()) {
            format!(" {}", r.counts)
        } else {
            String::new()
        };
        let message = r
            .message
            .as_deref()
            .map(|m| format!(" - {m}"))
            .unwrap_or_default();
        let running = match (&r.pid, &r.progress) {
            (Some(pid), Some(p)) => format!(
                " (pid {pid}: {} pages staged, {} REST calls, {} records answered so far)",
                p["pages_staged"], p["rest_calls"], p["records_answered"]
            ),
            _ => String::new(),
        };
        outln!(
            "  #{} {} {} {} {}{running}{counts}{message}",
            r.run_id,
            r.started_at,
            r.command,
            args,
            r.outcome
        );
    }
    if let Some(writer) = &s.writer
        && let Some(waiting) = &writer.waiting
    {
        outln!("writer: pid {}, {waiting}", writer.pid);
    }
    if let Some(unknown) = &s.writer_unknown {
        outln!("writer: unknown: {unknown}");
    }
    match &s.last_success {
        Some(r) => outln!(
            "last successful push: #{} {} ({}, finished {})",
            r.run_id,
            r.command,
            r.outcome,
            r.finished_at.as_deref().unwrap_or("?")
        ),
        None => outln!("last successful push: none yet"),
    }
    if let Some(sample) = &s.marketo_sample {
        let found = match &sample.error {
            Some(error) => format!("could not be looked up: {error}"),
            None if sample.missing() > 0 => {
                format!(
                    "Marketo lacks {} of {} leads, {} of {} opportunities, {} of {} companies and {} of {} roles asked about: run `{}`, then push",
                    sample.leads_missing,
                    sample.leads_asked,
                    sample.opportunities_missing,
                    sample.opportunities_asked,
                    sample.companies_missing,
                    sample.companies_asked,
                    sample.roles_missing,
                    sample.roles_asked,
                    crate::export::recheck::recheck_command(sample.more_than_roles_missing() > 0)
                )
            }
            None => format!(
                "all {} leads, {} opportunities, {} companies and {} roles asked about are in Marketo",
                sample.leads_asked,
                sample.opportunities_asked,
                sample.companies_asked,
                sample.roles_asked
            ),
        };
        outln!(
            "last sample of what Marketo holds: #{} {}: {found}",
            sample.run_id,
            sample.sampled_at
        );
    }
    outln!(
        "newest opportunity change staged: {}; acknowledged by Marketo: {}",
        s.lag.newest_staged.as_deref().unwrap_or("none"),
        s.lag.newest_acknowledged.as_deref().unwrap_or("none")
    );
    outln!("pending for Marketo (create / update / delete / skip):");
    for (object, c) in &s.pending {
        outln!(
            "  {object:<17} {} / {} / {} / {}",
            c.create,
            c.update,
            c.delete,
            c.skip
        );
    }
    for r in &s.last_errors {
        outln!(
            "last error: #{} {} {}: {}",
            r.run_id,
            r.started_at,
            r.command,
            r.message.as_deref().unwrap_or("")
        );
    }
    outln!(
        "standing problems: {} (a run exits 3 only when it finds a new one)",
        s.problems_total
    );
    for p in &s.problems {
        let last = if p.unsendable {
            // Checked again only when its records change.
            format!(
                "stands while its records do not change, last checked by run {}",
                p.last_run
            )
        } else {
            format!("last seen {} by run {}", p.last_seen, p.last_run)
        };
        outln!(
            "  {} {} {}: {} (first seen {} by run {}, {last})",
            p.stage,
            p.subject,
            p.key,
            p.reason,
            p.first_seen,
            p.first_run,
        );
    }
    outln!("rejected records: {}", s.rejected_total);
    for r in &s.rejected_recent {
        outln!(
            "  run {} {} record {} ({}): {}",
            r.run_id,
            r.source,
            r.position,
            r.entity_set.as_deref().unwrap_or("?"),
            r.reason
        );
    }
}

/// A duration as a person reads it at a glance: `45s`, `12m`, `2h`, `2h05m`, `3d04h`.
fn duration_text(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 if secs % 3600 < 60 => format!("{}h", secs / 3600),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ if secs % 86_400 < 3600 => format!("{}d", secs / 86_400),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;
    use std::time::Duration;

    #[test]
    fn durations_read_at_a_glance() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h"),
            (3659, "1h"),
            (3660, "1h01m"),
            (11_100, "3h05m"),
            (86_400, "1d"),
            (90_000, "1d01h"),
        ] {
            assert_eq!(duration_text(Duration::from_secs(secs)), text, "{secs}");
        }
    }
}
