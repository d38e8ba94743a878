//! `oppsync pull`: stage Web API pages, one page per transaction, from a fixture folder
//! (`--fixtures DIR`) or from the live Web API, then (for full snapshots) tombstone what the
//! snapshot no longer holds. Both sources go through the same `page::parse` and
//! `stage::stage_page`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::Context;
use crate::exit::Outcome;
use crate::export_rows;
use crate::problem::{self, Seen};
use crate::source::fixtures;
use crate::source::page::{self, Page};
use crate::source::strategy::{Fallback, Start};
use crate::source::webapi::{Rejected, WebApi};
use crate::stage::{self, PageCounts, PageReport, PullState};

/// At most this many rejected records are listed on the terminal; all are in `rejected_record`.
const LISTED_REJECTS: usize = 20;

/// One page's text and where it came from.
pub(crate) struct PageText {
    pub source: String,
    /// The file name, used for the entity set when the page has no `@odata.context`.
    pub name: Option<String>,
    pub text: String,
}

/// What a pull staged so far, and how to report it.
#[derive(Default)]
struct Tally {
    pages: u64,
    total: PageCounts,
    per_set: BTreeMap<String, u64>,
    pulled: BTreeSet<&'static str>,
    unknown_pages: Vec<Value>,
    listed: usize,
    swept: u64,
    /// Every record rejected or left unstaged, for the standing-problem register.
    problems: Vec<Seen>,
    /// The spinner of the entity set being pulled live (hidden off a terminal).
    bar: Option<indicatif::ProgressBar>,
    /// `--full`: the export rows are evaluated in full afterwards.
    full: bool,
    /// The staging tables this pull has staged a page into (`stage::indexes`).
    filling: BTreeSet<&'static str>,
    /// The time spent writing pages into the staging tables (not fetching or parsing them).
    staging: Duration,
}

impl Tally {
    /// Parses and stages one page and reports on it.
    fn stage(&mut self, ctx: &mut Context, page: PageText) -> Result<()> {
        let PageText { source, name, text } = page;
        let parsed = page::parse(&source, &text, name.as_deref())?;
        self.stage_parsed(ctx, &source, &parsed)
    }

    /// Stages one parsed page and reports on it; a requested stop ends the pull before it.
    fn stage_parsed(&mut self, ctx: &mut Context, source: &str, page: &Page<'_>) -> Result<()> {
        crate::stop::check()?;
        let spec = page.entity_set.as_deref().and_then(stage::spec_for);
        let filling =
            spec.filter(|spec| !page.records.is_empty() && self.filling.insert(spec.table));
        if let Some(spec) = filling {
            // The first records for this table: empty, it fills faster without its lookup indexes.
            let n = stage::indexes::set_aside_if_empty(&mut ctx.conn, spec.table)?;
            if n > 0 {
                ctx.detail(format!(
                    "{}: empty, so staged without its {n} lookup indexes, built once the pull is staged",
                    spec.table
                ));
            }
        }
        let started = Instant::now();
        let report = stage::stage_page(&mut ctx.conn, ctx.run_id, source, page)?;
        self.staging += started.elapsed();
        self.record(ctx, source, &report, page.records.is_empty());
        Ok(())
    }

    fn record(&mut self, ctx: &mut Context, source: &str, report: &PageReport, empty: bool) {
        self.pages += 1;
        let spec = report.entity_set.as_deref().and_then(stage::spec_for);
        if let Some(spec) = spec {
            self.pulled.insert(spec.entity_set);
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
        if c.unknown > 0 || (spec.is_none() && empty) {
            let set = report
                .entity_set
                .clone()
                .unwrap_or_else(|| "(none)".to_string());
            crate::progress::warn(&format!(
                "warning: {source}: entity set {set} is not one oppsync stages ({}); {} records skipped",
                page::KNOWN_ENTITY_SETS.join(", "),
                c.unknown
            ));
            self.unknown_pages.push(
                json!({"source": source, "entity_set": report.entity_set, "records": c.unknown}),
            );
            self.problems.push(Seen {
                subject: String::new(),
                key: set.clone(),
                reason: format!("entity set {set} is not one oppsync stages"),
            });
        }
        for rejection in &report.rejections {
            self.problems.push(Seen {
                subject: rejection.entity_set.clone().unwrap_or_default(),
                key: rejection.key.clone(),
                reason: rejection.reason.clone(),
            });
            if self.listed < LISTED_REJECTS {
                crate::progress::warn(&format!(
                    "rejected: {source} record {}: {}",
                    rejection.position, rejection.reason
                ));
            }
            self.listed += 1;
        }
        if let Some(set) = &report.entity_set {
            *self.per_set.entry(set.clone()).or_default() += c.upserted;
        }
        self.total.upserted += c.upserted;
        self.total.deleted += c.deleted;
        self.total.rejected += c.rejected;
        self.total.unknown += c.unknown;
        self.total.filtered += c.filtered;
        self.total.unchanged += c.unchanged;
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} pages, {} records staged so far",
                self.pages, self.total.upserted
            ));
        }
        ctx.counts = self.counts();
    }

    fn counts(&self) -> Value {
        let mut counts = json!({
            "pages": self.pages,
            "upserted": self.total.upserted,
            "unchanged": self.total.unchanged,
            "deleted": self.total.deleted,
            "rejected": self.total.rejected,
            "unknown_entity_set_records": self.total.unknown,
            "filtered": self.total.filtered,
            "missing_from_full_pull": self.swept,
        });
        if !self.unknown_pages.is_empty() {
            counts["unknown_pages"] = json!(self.unknown_pages);
        }
        counts
    }

    /// Tombstones what the given entity sets' complete snapshots no longer hold.
    fn sweep(&mut self, ctx: &mut Context, sets: &BTreeSet<&'static str>) -> Result<()> {
        for (set, n) in stage::sweep_missing(&mut ctx.conn, ctx.run_id, sets)? {
            if n > 0 {
                ctx.say(format!(
                    "{set}: {n} records missing from the full snapshot marked deleted"
                ));
            }
            self.swept += n;
        }
        ctx.counts = self.counts();
        Ok(())
    }

    /// Reports the pull and records its problems; exits 3 only for problems seen first now.
    fn finish(self, ctx: &mut Context) -> Result<Outcome> {
        if self.listed > LISTED_REJECTS {
            crate::progress::warn(&format!(
                "rejected: {} more; see: sqlite3 {} 'select * from rejected_record where run_id = {}'",
                self.listed - LISTED_REJECTS,
                ctx.conn.path().unwrap_or("oppsync.db"),
                ctx.run_id
            ));
        }
        let by_set = self
            .per_set
            .iter()
            .map(|(set, n)| format!("{set} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let t = &self.total;
        ctx.say(format!(
            "staged {} records{} from {} pages ({}); {} deleted, {} rejected",
            t.upserted,
            of_them_unchanged(t.unchanged),
            self.pages,
            if by_set.is_empty() { "none" } else { &by_set },
            t.deleted + self.swept,
            t.rejected
        ));
        ctx.detail(format!(
            "wrote the staged records in {} ms",
            self.staging.as_millis()
        ));
        if t.filtered > 0 {
            ctx.detail(format!(
                "{} connections touching no opportunity (or deletes of connections never staged) left out",
                t.filtered
            ));
        }
        // The export rows follow what was staged, so that plan, push and status read them as
        // they are; a full pull evaluates them in full.
        if self.full {
            export_rows::invalidate(&ctx.conn)?;
        }
        let refreshed = export_rows::refresh(&mut ctx.conn, &ctx.config)
            .context("refreshing the export rows")?;
        ctx.detail(refreshed.describe());
        let new = problem::record(&mut ctx.conn, ctx.run_id, "pull", &self.problems)?;
        problem::close_staged(&ctx.conn, ctx.run_id)?;
        ctx.counts["new_problems"] = json!(new);
        if t.rejected > 0 || t.unknown > 0 {
            crate::progress::warn(&format!(
                "pull finished with {} rejected and {} skipped records (listed above), {new} of them new",
                t.rejected, t.unknown
            ));
            if new > 0 {
                return Ok(Outcome::DoneWithRejects);
            }
            ctx.say("no new problem: the rest stand since earlier runs (see `oppsync status`)");
        }
        Ok(Outcome::Done)
    }
}

/// What a count of staged records adds about those staged again as they were: nothing when
/// none were.
fn of_them_unchanged(unchanged: u64) -> String {
    if unchanged == 0 {
        String::new()
    } else {
        format!(" ({unchanged} of them unchanged)")
    }
}

/// The counts of a pull that has staged nothing yet: the run's counts from its start, so that a
/// pull that fails before its first page says it staged nothing, and `run::prune` may remove it
/// once it is old (a run without counts may have staged records, and stays).
pub(crate) fn nothing_staged() -> Value {
    Tally::default().counts()
}

/// `pull --fixtures DIR [--full]`.
pub(crate) fn run(ctx: &mut Context, dir: &Path, full: bool) -> Result<Outcome> {
    ctx.counts = nothing_staged();
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

/// Stages pages in order, one transaction each, and reports; with `full`, tombstones what the
/// pulled entity sets no longer hold.
pub(crate) fn stage_pages(
    ctx: &mut Context,
    pages: impl Iterator<Item = Result<PageText>>,
    full: bool,
) -> Result<Outcome> {
    let mut tally = Tally {
        full,
        ..Tally::default()
    };
    for page in pages {
        tally.stage(ctx, page?)?;
    }
    if full {
        let pulled = tally.pulled.clone();
        tally.sweep(ctx, &pulled)?;
    }
    tally.finish(ctx)
}

/// `pull [--full]` from the live Web API.
pub(crate) fn run_live(ctx: &mut Context, full: bool) -> Result<Outcome> {
    ctx.counts = nothing_staged();
    let mut api = WebApi::new(&ctx.config.dynamics)?;
    ctx.say(format!("pulling from {}", api.org_url()));
    let mut tally = Tally {
        full,
        ..Tally::default()
    };
    for &set in stage::LIVE_ORDER {
        pull_entity_set(ctx, &mut api, &mut tally, set, full)
            .with_context(|| format!("pulling {set}"))?;
    }
    // Each wait and retry is a line on a terminal and with -v elsewhere; the log has this one.
    if api.throttled > 0 || api.retried > 0 {
        ctx.say(format!(
            "Dynamics throttled {} requests (429; each waited as Retry-After asked) and {} were \
             sent again (network errors, 5xx)",
            api.throttled, api.retried
        ));
    }
    let mut counts = tally.counts();
    counts["throttled"] = json!(api.throttled);
    counts["retried"] = json!(api.retried);
    let outcome = tally.finish(ctx)?;
    counts["new_problems"] = ctx.counts["new_problems"].clone();
    ctx.counts = counts;
    Ok(outcome)
}

fn pull_entity_set(
    ctx: &mut Context,
    api: &mut WebApi,
    tally: &mut Tally,
    set: &'static str,
    full: bool,
) -> Result<()> {
    let Some(spec) = stage::spec_for(set) else {
        return Ok(());
    };
    let state = stage::pull_state(&ctx.conn, set)?;
    let start = Start::from_state(state.as_ref(), full, spec.has_modifiedon());
    // Whether an earlier pull found change tracking off for this set, and said so: a set read
    // in full every time (no modifiedon) is then no news when nothing in it changed.
    let known_untracked = state.is_some_and(|s| s.mode == "watermark");
    // A copy: the pull below needs the context mutably while the columns borrow the mapping.
    let mapping = ctx.config.mapping.clone();
    let mut columns = spec.select_columns_mapped(&mapping);
    let bar = crate::progress::spinner(set);
    tally.bar = Some(bar.clone());
    let pulled = fetch_entity_set(ctx, api, tally, spec, &mut columns, start, known_untracked);
    tally.bar = None;
    bar.finish_and_clear();
    pulled
}

/// Runs the queries of one entity set, falling back as Dataverse's refusals require.
fn fetch_entity_set(
    ctx: &mut Context,
    api: &mut WebApi,
    tally: &mut Tally,
    spec: &'static stage::EntitySpec,
    columns: &mut Vec<&str>,
    mut start: Start,
    known_untracked: bool,
) -> Result<()> {
    let set = spec.entity_set;
    loop {
        let before = tally.total.clone();
        let result = api.fetch(set, spec.key, columns, &start, &mut |url, page| {
            tally.stage_parsed(ctx, url, page)
        });
        let rejected = match result {
            Ok(delta_link) => {
                return finish_entity_set(
                    ctx,
                    tally,
                    spec,
                    &start,
                    delta_link,
                    &before,
                    known_untracked,
                );
            }
            Err(err) => err.downcast::<Rejected>()?,
        };
        let Some(fallback) = Fallback::after(&rejected, &start, columns, spec.has_modifiedon())
        else {
            return Err(rejected.into());
        };
        match &fallback {
            Fallback::Full => ctx.say(format!(
                "{set}: the stored delta link was refused ({rejected}); pulling {set} in full"
            )),
            Fallback::WithoutColumn(column) => {
                let line = format!(
                    "{set}: the org has no {column} column; every {set} record is in scope"
                );
                // A pull by modifiedon asks with the column each time (a delta link keeps the
                // columns it was made with, so it asks once): the first pull of the set said
                // so, and `check` does; an idle `sync --every` cycle would log it every time.
                if matches!(start, Start::Since(_)) {
                    ctx.detail(line);
                } else {
                    ctx.say(line);
                }
                columns.retain(|c| c != column);
            }
            Fallback::Watermark => ctx.say(format!(
                "{set}: change tracking is refused ({rejected}); pulling by modifiedon instead"
            )),
        }
        start = fallback.start(&start);
    }
}

/// After the last page: a full pull (or a watermark pull from the beginning) was a complete
/// snapshot, so what it lacks is deleted; then record where the next pull starts.
/// `known_untracked`: the pull state this pull started from already said change tracking off.
fn finish_entity_set(
    ctx: &mut Context,
    tally: &mut Tally,
    spec: &'static stage::EntitySpec,
    start: &Start,
    delta_link: Option<String>,
    before: &PageCounts,
    known_untracked: bool,
) -> Result<()> {
    let set = spec.entity_set;
    let complete = start.is_complete();
    if complete {
        tally.sweep(ctx, &BTreeSet::from([set]))?;
    }
    let state = match delta_link {
        Some(link) => PullState {
            mode: "change_tracking".into(),
            delta_link: Some(link),
            watermark: None,
        },
        None => {
            if matches!(start, Start::Full) {
                let line = if spec.has_modifiedon() {
                    format!(
                        "{set}: change tracking is off for this table (no delta link); later pulls ask for records by \
                         modifiedon, and deletes in Dynamics then need `pull --full`"
                    )
                } else {
                    format!(
                        "{set}: change tracking is off for this table (no delta link), and it has no modifiedon: \
                         every pull reads it in full"
                    )
                };
                if known_untracked {
                    ctx.detail(line);
                } else {
                    ctx.say(line);
                }
            }
            PullState {
                mode: "watermark".into(),
                delta_link: None,
                watermark: stage::max_modifiedon(&ctx.conn, spec)?,
            }
        }
    };
    stage::save_pull_state(&ctx.conn, ctx.run_id, set, &state)?;
    let (staged, unchanged, deleted) = (
        tally.total.upserted - before.upserted,
        tally.total.unchanged - before.unchanged,
        tally.total.deleted - before.deleted,
    );
    let line = format!(
        "{set}: {staged} staged{}, {deleted} deleted ({})",
        of_them_unchanged(unchanged),
        start.describe()
    );
    // An entity set with no change since the last pull says so only with -v: an idle
    // `sync --every` would log six such lines a cycle, and the pull's closing line counts
    // every set anyway. Records read again as they were are no change (a pull by modifiedon
    // reads its last seconds again each time). A pull in full says what it read, unless the
    // set is read in full every time (change tracking off, no modifiedon).
    if staged == unchanged && deleted == 0 && (!complete || known_untracked) {
        ctx.detail(line);
    } else {
        ctx.say(line);
    }
    Ok(())
}
