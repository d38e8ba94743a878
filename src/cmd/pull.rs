//! `oppsync pull --fixtures DIR [--full]`: stage every page of a fixture folder, one page per
//! transaction, then (with `--full`) tombstone what the snapshot no longer holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::source::{fixtures, page};
use crate::stage::{self, PageCounts};

/// At most this many rejected records are listed on the terminal; all are in `rejected_record`.
const LISTED_REJECTS: usize = 20;

pub(crate) fn run(ctx: &mut Context, dir: &Path, full: bool) -> Result<Outcome> {
    let files = fixtures::page_files(dir)?;
    // Read lazily: one page in memory at a time.
    let pages = files.iter().map(|file| {
        let source = file.display().to_string();
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading fixture {source}"))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(PageText { source, name, text })
    });
    stage_pages(ctx, pages, full)
}

/// One page's text and where it came from.
pub(crate) struct PageText {
    pub source: String,
    /// The file name, used for the entity set when the page has no `@odata.context`.
    pub name: Option<String>,
    pub text: String,
}

/// Stages pages in order, one transaction each, and reports; with `full`, tombstones what the
/// pulled entity sets no longer hold.
pub(crate) fn stage_pages(
    ctx: &mut Context,
    pages: impl Iterator<Item = Result<PageText>>,
    full: bool,
) -> Result<Outcome> {
    let mut page_count = 0;
    let mut total = PageCounts::default();
    let mut per_set: BTreeMap<String, u64> = BTreeMap::new();
    let mut pulled: BTreeSet<&'static str> = BTreeSet::new();
    let mut unknown_pages = Vec::new();
    let mut listed = 0;

    for page_text in pages {
        let PageText { source, name, text } = page_text?;
        page_count += 1;
        let parsed = page::parse(&source, &text, name.as_deref())?;
        let report = stage::stage_page(&mut ctx.conn, ctx.run_id, &source, &parsed)?;

        if let Some(spec) = report.entity_set.as_deref().and_then(stage::spec_for) {
            pulled.insert(spec.entity_set);
        }
        let c = &report.counts;
        ctx.detail(format!(
            "{source}: {} {} staged, {} deleted, {} rejected",
            report
                .entity_set
                .as_deref()
                .unwrap_or("(unknown entity set)"),
            c.upserted,
            c.deleted,
            c.rejected
        ));
        if c.unknown > 0
            || (report
                .entity_set
                .as_deref()
                .and_then(stage::spec_for)
                .is_none()
                && parsed.records.is_empty())
        {
            let set = report
                .entity_set
                .clone()
                .unwrap_or_else(|| "(none)".to_string());
            eprintln!(
                "warning: {source}: entity set {set} is not one oppsync stages ({}); {} records skipped",
                page::KNOWN_ENTITY_SETS.join(", "),
                c.unknown
            );
            unknown_pages.push(
                json!({"source": source, "entity_set": report.entity_set, "records": c.unknown}),
            );
        }
        for rejection in &report.rejections {
            if listed < LISTED_REJECTS {
                eprintln!(
                    "rejected: {source} record {}: {}",
                    rejection.position, rejection.reason
                );
            }
            listed += 1;
        }
        if let Some(set) = &report.entity_set {
            *per_set.entry(set.clone()).or_default() += c.upserted;
        }
        total.upserted += c.upserted;
        total.deleted += c.deleted;
        total.rejected += c.rejected;
        total.unknown += c.unknown;
        total.filtered += c.filtered;
        ctx.counts = json!({
            "pages": page_count,
            "upserted": total.upserted,
            "deleted": total.deleted,
            "rejected": total.rejected,
            "unknown_entity_set_records": total.unknown,
            "filtered": total.filtered,
        });
    }
    if listed > LISTED_REJECTS {
        eprintln!(
            "rejected: {} more; see: sqlite3 {} 'select * from rejected_record where run_id = {}'",
            listed - LISTED_REJECTS,
            ctx.conn.path().unwrap_or("oppsync.db"),
            ctx.run_id
        );
    }

    let mut swept_total = 0;
    if full {
        for (set, n) in stage::sweep_missing(&mut ctx.conn, ctx.run_id, &pulled)? {
            if n > 0 {
                ctx.say(format!(
                    "--full: {n} {set} missing from the snapshot marked deleted"
                ));
            }
            swept_total += n;
        }
        ctx.counts["missing_from_full_pull"] = json!(swept_total);
    }
    if !unknown_pages.is_empty() {
        ctx.counts["unknown_pages"] = json!(unknown_pages);
    }

    let by_set = per_set
        .iter()
        .map(|(set, n)| format!("{set} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    ctx.say(format!(
        "staged {} records from {} pages ({}); {} deleted, {} rejected",
        total.upserted,
        page_count,
        if by_set.is_empty() { "none" } else { &by_set },
        total.deleted + swept_total,
        total.rejected
    ));
    if total.filtered > 0 {
        ctx.detail(format!(
            "{} connections touching no opportunity (or deletes of connections never staged) left out",
            total.filtered
        ));
    }
    if total.rejected > 0 || total.unknown > 0 {
        eprintln!(
            "pull finished with {} rejected and {} skipped records (listed above)",
            total.rejected, total.unknown
        );
        return Ok(Outcome::DoneWithRejects);
    }
    Ok(Outcome::Done)
}
