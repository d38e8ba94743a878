//! The export views materialized in `export_row`, kept current at the cost of what changed.
//!
//! A full evaluation materializes the rule views of `sql/views/` once, in file order, as indexed
//! temp tables that shadow the views (so each rule is evaluated once, not once per view that
//! reads it), and stores each export view's rows, with the `[mapping.*]` fields merged in SQL,
//! straight into `export_row`.
//! Afterwards staging triggers note what a pull changed (`export_dirty`); a refresh turns that
//! into the roots to re-evaluate (`sql/refresh/1_targets.sql`), shadows the staging tables with
//! just the records those roots depend on (`2_subset.sql`), evaluates the same views over them
//! and replaces the rows of those roots that differ. Sales persons are then re-evaluated from
//! the stored rows that name the users concerned. `pending` marks what push has to send; triggers on
//! `mkto_ack` keep it true. `verify` compares the stored rows with a fresh full evaluation.
//!
//! Writing commands refresh: a partial refresh in one transaction; a first full evaluation (no
//! row stored) in one transaction holding the database in rollback-journal mode, so that its
//! rows are written once (`db::hold_in_rollback_mode`); any other full evaluation commits after
//! each export view (`built` stays 0 until its last commit, so that one stopped midway is done
//! again) while a thread of its own copies the committed WAL frames into the database.
//! Read-only commands, when the stored rows are not current, evaluate in full into temp tables
//! that shadow the stored ones.

use std::fmt::Write as _;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};

use crate::config::Config;
use crate::db::text_pairs;
use crate::object::Object;
use crate::sql::{REFRESH, SqlFile, VIEWS};

/// Bump when the way rows are stored changes, so that stored rows are evaluated again.
const FORMAT: &str = "export rows 1";

/// The columns of `export_row`, in order.
const ROW_COLUMNS: &str =
    "object, root, key, source_id, payload, skip_reason, lead_key, sales_person_id, pending";

/// Above this share of the opportunities to re-evaluate, a full evaluation is cheaper.
const INCREMENTAL_SHARE: f64 = 0.2;

/// Helper threads SQLite may sort with during a full evaluation.
const SORT_THREADS: i64 = 2;

/// Rule views left as views rather than materialized, because the one view that reads them
/// evaluates them more cheaply inline: materializing `opportunity_role_claim` wrote every claim
/// (2.5M rows at 1M opportunities) to read back only the roles kept.
const INLINED: &[&str] = &["opportunity_role_claim"];

/// The indexes each materialized view gets, named by their first column: the columns the views
/// after it look rows up by, followed by the columns a view reads from the rows it finds (while
/// walking them in that order, or looking one up: the skip reason of a company or an
/// opportunity, for every lead, opportunity and role), so that the index alone answers
/// (the rows are in another order, and each row read is a page read).
const VIEW_INDEXES: &[(&str, &[&str])] = &[
    ("opportunity_customer", &["opportunityid", "customer_id"]),
    ("contact_account", &["contactid, accountid"]),
    ("opportunity_account", &["opportunityid"]),
    ("opportunity_connection", &["opportunityid"]),
    (
        "opportunity_contact_role",
        &["contactid, lead_key", "opportunityid"],
    ),
    ("owner_sales_person", &["ownerid"]),
    ("mkto_company", &["key, skip_reason"]),
    ("mkto_opportunity", &["key, skip_reason"]),
];

/// How the rows were brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Nothing changed since the last refresh.
    Current,
    /// Only the roots a change touched: this many opportunities, leads and companies.
    Incremental {
        opportunities: usize,
        leads: usize,
        companies: usize,
    },
    /// Every row evaluated again, for this reason.
    Full(FullBecause),
}

/// What a refresh did, for the run's counts and `-v`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refreshed {
    pub how: Refresh,
    pub millis: u128,
}

impl Refreshed {
    pub(crate) fn describe(&self) -> String {
        match self.how {
            Refresh::Current => "export rows already current".to_string(),
            Refresh::Incremental {
                opportunities,
                leads,
                companies,
            } => format!(
                "export rows refreshed for {opportunities} opportunities, {leads} leads and {companies} companies in {} ms",
                self.millis
            ),
            Refresh::Full(_) => format!("export rows evaluated in full in {} ms", self.millis),
        }
    }
}

/// Why a refresh evaluates every row rather than the roots a change touched. It is said to
/// whoever runs the command, since it is the one step whose cost grows with the org: at 1M
/// opportunities over a minute, where a partial refresh takes seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullBecause {
    /// `built` is 0: never evaluated, or the last full evaluation stopped before its end.
    NoneComplete,
    /// The definition was cleared (`pull --full`).
    Asked,
    /// The views, settings or mappings differ from those the rows were evaluated with.
    DefinitionChanged,
    /// The change touches more than `INCREMENTAL_SHARE` of the opportunities.
    LargeChange,
}

impl FullBecause {
    fn describe(self) -> &'static str {
        match self {
            FullBecause::NoneComplete => {
                "no complete evaluation is stored yet (a first pull, or an evaluation stopped before its end)"
            }
            FullBecause::Asked => "a full pull asks for one",
            FullBecause::DefinitionChanged => {
                "the views, the [rules] or [export] settings or the mappings changed since the stored rows were evaluated"
            }
            FullBecause::LargeChange => {
                "the change touches more than a fifth of the opportunities (a partial refresh would cost more)"
            }
        }
    }
}

/// What the rows are evaluated from besides the staged records: the view SQL, the rule and
/// export settings the views read, and the mappings. Any difference needs a full evaluation.
fn definition(conn: &Connection, config: &Config) -> Result<String> {
    let mut text = String::from(FORMAT);
    for file in VIEWS {
        text.push_str(file.text);
    }
    let mut stmt = conn.prepare("SELECT name, value FROM rule_setting ORDER BY name")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let value: rusqlite::types::Value = row.get(1)?;
        let _ = write!(text, "\nsetting {name}={value:?}");
    }
    for object in Object::ALL {
        for (field, column) in config.mapping.of(object) {
            let _ = write!(text, "\nmapping {} {field:?}={column:?}", object.name());
        }
    }
    Ok(text)
}

/// Whether the stored rows were evaluated with this definition (the view SQL, settings and
/// mappings this run has).
fn has_definition(conn: &Connection, config: &Config) -> Result<bool> {
    let state: Option<(i64, Option<String>)> = conn
        .query_row(
            "SELECT built, definition FROM main.export_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((1, Some(stored))) = state else {
        return Ok(false);
    };
    Ok(stored == definition(conn, config)?)
}

/// Whether the stored rows are current: evaluated with this definition, and nothing staged
/// since.
pub(crate) fn is_current(conn: &Connection, config: &Config) -> Result<bool> {
    let dirty: bool =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM main.export_dirty)", [], |r| {
            r.get(0)
        })?;
    Ok(!dirty && has_definition(conn, config)?)
}

/// Brings `export_row` up to date: nothing when it is current, the roots a change touched when
/// that is small (in one transaction), else a full evaluation (`evaluate_in_full`). Staging
/// indexes a pull set aside (`stage::indexes`) are built first, in a transaction of their own.
pub(crate) fn refresh(conn: &mut Connection, config: &Config) -> Result<Refreshed> {
    // The rules and the refresh look staged records up through them.
    crate::stage::indexes::build_set_aside(conn)?;
    let started = Instant::now();
    let definition = definition(conn, config)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (built, stored): (i64, Option<String>) = tx.query_row(
        "SELECT built, definition FROM export_state WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let how = if built == 0 {
        Refresh::Full(FullBecause::NoneComplete)
    } else if stored.is_none() {
        Refresh::Full(FullBecause::Asked)
    } else if stored.as_deref() != Some(definition.as_str()) {
        Refresh::Full(FullBecause::DefinitionChanged)
    } else {
        let dirty: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM export_dirty)", [], |r| {
            r.get(0)
        })?;
        if !dirty {
            Refresh::Current
        } else {
            crate::stop::interruptible("re-evaluating the rows of what changed", || {
                incremental(&tx, config)
            })?
            .unwrap_or(Refresh::Full(FullBecause::LargeChange))
        }
    };
    let refreshed = |how| Refreshed {
        how,
        millis: started.elapsed().as_millis(),
    };
    let Refresh::Full(because) = how else {
        store_refreshed(tx, how, &definition)?;
        return Ok(refreshed(how));
    };
    crate::progress::say(&format!(
        "evaluating every export row in full: {}",
        because.describe()
    ));
    let first: bool = tx.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM main.export_row)",
        [],
        |r| r.get(0),
    )?;
    // Nothing is written yet: the evaluation has a transaction of its own.
    drop(tx);
    let held = first && crate::db::hold_in_rollback_mode(conn)?;
    if held {
        crate::progress::say(
            "no export row is stored yet: writing them once, in rollback-journal mode, with the \
             database held until they are stored (readers find it locked until then)",
        );
    }
    let evaluated = evaluate_in_full(conn, config, held, how, &definition);
    let released = if held {
        crate::db::release_to_wal(conn)
    } else {
        Ok(())
    };
    evaluated?;
    released?;
    Ok(refreshed(how))
}

/// Evaluates every row and stores them, in a transaction that takes the database exclusively
/// when `held` (in rollback-journal mode, `db::hold_in_rollback_mode`), else in WAL mode, where
/// it commits as it goes (with `Checkpoints`).
fn evaluate_in_full(
    conn: &mut Connection,
    config: &Config,
    held: bool,
    how: Refresh,
    definition: &str,
) -> Result<()> {
    let behavior = if held {
        rusqlite::TransactionBehavior::Exclusive
    } else {
        rusqlite::TransactionBehavior::Immediate
    };
    let tx = conn.transaction_with_behavior(behavior)?;
    let checkpoints = Checkpoints::start(&tx)?;
    tx.execute("UPDATE export_state SET built = 0 WHERE id = 1", [])?;
    let evaluated = crate::stop::interruptible("evaluating every export row", || {
        full(&tx, config, "main", checkpoints.as_ref())
    });
    let finished = checkpoints.map_or(Ok(()), |checkpoints| checkpoints.finish(&tx));
    if let Err(err) = evaluated {
        // The step in progress is rolled back, but the temp tables the steps before it
        // committed would shadow the views for the rest of this connection's life.
        drop(tx);
        let tx = conn.transaction()?;
        drop_materialized(&tx)?;
        tx.commit()?;
        return Err(err);
    }
    finished?;
    // Every row is new: the next push re-checks the problems of every root.
    tx.execute_batch(
        "UPDATE export_state SET skips_checked = 0 WHERE id = 1;
         DELETE FROM export_skip_root;",
    )?;
    store_refreshed(tx, how, definition)
}

/// The condition on an export row (aliased `alias`) that the plan cannot send it, whatever
/// Marketo holds: the view gives a reason to skip it, or no key or payload. Served by the
/// partial index `export_row_skipped`.
pub(crate) fn unsendable(alias: &str) -> String {
    format!("({alias}.skip_reason IS NOT NULL OR {alias}.key IS NULL OR {alias}.payload IS NULL)")
}

/// Marks the rows refreshed (`how`) as evaluated with `definition`, and commits.
fn store_refreshed(tx: Transaction<'_>, how: Refresh, definition: &str) -> Result<()> {
    if how != Refresh::Current {
        tx.execute("DELETE FROM export_dirty", [])?;
        tx.execute(
            "UPDATE export_state SET built = 1, definition = ?1 WHERE id = 1",
            [definition],
        )?;
    }
    tx.commit().context("storing the export rows")
}

/// A total of `export_total` (0 when the rows hold none of it).
pub(crate) fn total(conn: &Connection, name: &str) -> Result<i64> {
    let value = conn
        .query_row(
            "SELECT value FROM export_total WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(value.unwrap_or(0))
}

/// Makes the next refresh a full evaluation (`pull --full`, and the repair `verify` suggests).
pub(crate) fn invalidate(conn: &Connection) -> Result<()> {
    conn.execute("UPDATE export_state SET definition = NULL WHERE id = 1", [])?;
    Ok(())
}

/// For a connection that may not write: when the stored rows were evaluated with another
/// definition (or never), evaluates them in full into temp tables that shadow `export_row`,
/// `export_removed`, `derived_opportunity` and `export_total` for this connection. Records
/// staged since the last refresh (a pull still running, or one that failed) are not waited
/// for: the stored rows are read as of that refresh, which the next writing command brings
/// up to date, rather than evaluating a large org in full for a look at it.
pub(crate) fn evaluate_temporary(conn: &mut Connection, config: &Config) -> Result<()> {
    if has_definition(conn, config)? {
        return Ok(());
    }
    crate::progress::say(
        "evaluating every export row for this command only: the stored ones were evaluated with other views, settings or mappings, or not yet (the next pull or push stores them)",
    );
    let tx = conn.transaction()?;
    full(&tx, config, "temp", None)?;
    tx.commit()?;
    Ok(())
}

/// Every row evaluated from the views, into `schema`.export_row, with `export_removed` rebuilt.
/// Rule views become indexed temp tables in file order; each export view is stored straight
/// into `export_row` and, when a later view reads it, shadowed by the columns read back from
/// the stored rows, so that no export row is written twice. With `checkpoints`, what is stored
/// is committed after each export view and handed to them to copy into the database.
fn full(
    tx: &Transaction<'_>,
    config: &Config,
    schema: &str,
    checkpoints: Option<&Checkpoints>,
) -> Result<()> {
    if schema == "temp" {
        create_temp_tables(tx)?;
    }
    let started = Instant::now();
    let shown = crate::progress::stages("export rows");
    let mut rows = Vec::new();
    sorting_in_parallel(tx, || {
        without_indexes(tx, schema, || {
            tx.execute_batch(&format!("DELETE FROM {schema}.export_row;"))?;
            for file in VIEWS {
                let name = file.view_name();
                let Some(object) = Object::from_view(name) else {
                    materialize_views(tx, std::slice::from_ref(file), Some(&shown))?;
                    continue;
                };
                shown.at(&format!("evaluating and storing {name}"));
                let evaluating = Instant::now();
                view_from_text(tx, file)?;
                let last: i64 = tx.query_row(
                    &format!("SELECT coalesce(max(rowid), 0) FROM {schema}.export_row"),
                    [],
                    |r| r.get(0),
                )?;
                let inserted = insert_rows(
                    tx,
                    config,
                    object,
                    &format!("{schema}.export_row"),
                    name,
                    None,
                )
                .with_context(|| format!("evaluating {}", file.path))?;
                if read_by_a_later_view(name) {
                    shadow_with_stored(tx, object, schema, last)?;
                }
                crate::progress::detail(&format!(
                    "evaluated and stored {name} in {} ms",
                    evaluating.elapsed().as_millis()
                ));
                rows.push((object, inserted));
                if let Some(checkpoints) = checkpoints {
                    checkpoints.commit_step(tx)?;
                }
            }
            shown.at(&format!("building the indexes of {schema}.export_row"));
            Ok(())
        })
    })?;
    // The index builds' pages are copied while the counts are made, not at the last commit.
    if let Some(checkpoints) = checkpoints {
        checkpoints.commit_step(tx)?;
    }
    crate::progress::detail(&format!(
        "evaluated every view and stored the export rows in {} ms",
        started.elapsed().as_millis()
    ));
    let started = Instant::now();
    shown.at("counting per opportunity and in total");
    tx.execute_batch(&format!(
        "DELETE FROM {schema}.derived_opportunity;
         INSERT INTO {schema}.derived_opportunity (opportunityid, accountid, contact_roles)
         {};",
        derived("")
    ))?;
    tx.execute_batch(&format!(
        "DELETE FROM {schema}.export_removed;
         INSERT INTO {schema}.export_removed (object, key)
         SELECT a.object, a.key FROM main.mkto_ack a
         WHERE NOT EXISTS (SELECT 1 FROM {schema}.export_row e WHERE e.object = a.object AND e.key = a.key);"
    ))?;
    tx.execute_batch(&format!(
        "DELETE FROM {schema}.export_total;
         INSERT INTO {schema}.export_total (name, value) {};",
        derived_totals(&format!("{schema}.derived_opportunity"))
    ))?;
    let mut total = tx.prepare(&format!(
        "INSERT INTO {schema}.export_total (name, value) VALUES ('rows:' || ?1, ?2)"
    ))?;
    for (object, inserted) in rows {
        total.execute(rusqlite::params![object.name(), inserted as i64])?;
    }
    drop(total);
    tx.execute(
        &format!("DELETE FROM {schema}.export_total WHERE value = 0"),
        [],
    )?;
    crate::progress::detail(&format!(
        "counted per opportunity and in total in {} ms",
        started.elapsed().as_millis()
    ));
    drop_materialized(tx)?;
    if schema == "temp" {
        crate::rules::create_temporary_views(tx)?;
    }
    Ok(())
}

/// Indexes of `export_row` left in place while a full evaluation fills the table: an entry's
/// key is only the object, so rows stored object by object, in rowid order, each append one,
/// where building the index afterwards would read every row once more (`export_row_pending`
/// holds nearly every row of a first evaluation, `export_row_skipped` few).
const KEPT_WHILE_FILLING: &[&str] = &["export_row_pending", "export_row_skipped"];

/// Runs `fill` with the indexes of `schema`.export_row dropped (but `KEPT_WHILE_FILLING`), then
/// builds them again: sorting once is cheaper than millions of B-tree inserts in random key
/// order. In `main`, the dropped ones are noted in `export_index_aside` first, since the fill
/// may commit: a full evaluation stopped before the end leaves them there, and the next one
/// builds them too.
fn without_indexes(
    tx: &Transaction<'_>,
    schema: &str,
    fill: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let mut indexes: Vec<(String, String)> = text_pairs(
        tx,
        &format!(
            "SELECT name, sql FROM {schema}.sqlite_master
             WHERE type = 'index' AND tbl_name = 'export_row' AND sql IS NOT NULL"
        ),
        [],
    )?
    .into_iter()
    .filter(|(name, _)| !KEPT_WHILE_FILLING.contains(&name.as_str()))
    .collect();
    if schema == "main" {
        for (name, sql) in &indexes {
            tx.execute(
                "INSERT OR REPLACE INTO main.export_index_aside (name, sql) VALUES (?1, ?2)",
                [name, sql],
            )?;
        }
        indexes = text_pairs(
            tx,
            "SELECT name, sql FROM main.export_index_aside ORDER BY name",
            [],
        )?;
    }
    for (name, _) in &indexes {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS {schema}.\"{name}\";"))?;
    }
    fill()?;
    let started = Instant::now();
    for (_, sql) in &indexes {
        // The stored SQL names no schema; the index belongs beside its table.
        let sql = sql.replacen("INDEX ", &format!("INDEX {schema}."), 1);
        tx.execute_batch(&sql)?;
    }
    if schema == "main" {
        tx.execute("DELETE FROM main.export_index_aside", [])?;
    }
    crate::progress::detail(&format!(
        "built the indexes of {schema}.export_row in {} ms",
        started.elapsed().as_millis()
    ));
    Ok(())
}

/// Copies the WAL frames a full evaluation commits into the database file on a thread of its
/// own, while the evaluation goes on, instead of all of them at the last commit (at 1M
/// opportunities, 2.3 GB of rows and indexes: the last commit took 8-9 s, most of it that copy
/// and its fsyncs). The connection's own automatic checkpoints are off meanwhile; `finish` puts
/// them back before the last commit, which copies what is left, as any commit does.
struct Checkpoints {
    requests: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    autocheckpoint: i64,
}

impl Checkpoints {
    /// Starts the thread, on a connection of its own to the database of `tx`; `None` when there
    /// is nothing to copy (a database in memory, or one not in WAL mode).
    fn start(tx: &Transaction<'_>) -> Result<Option<Checkpoints>> {
        let mode = crate::db::journal_mode(tx)?;
        let path = tx.path().filter(|p| !p.is_empty()).map(str::to_string);
        let Some(path) = path.filter(|_| mode.eq_ignore_ascii_case("wal")) else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .with_context(|| format!("opening {path} to copy its WAL"))?;
        let autocheckpoint: i64 = tx.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?;
        tx.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (requests, asked) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while asked.recv().is_ok() {
                while asked.try_recv().is_ok() {}
                let started = Instant::now();
                // PASSIVE never waits and never blocks the writer; frames it cannot copy now
                // are copied by the next request, or by the last commit.
                let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                crate::progress::detail(&match copied {
                    Ok((frames, done)) => format!(
                        "copied {done} of {frames} WAL frames into the database in {} ms",
                        started.elapsed().as_millis()
                    ),
                    Err(err) => format!("copying the WAL into the database: {err}"),
                });
            }
        });
        Ok(Some(Checkpoints {
            requests,
            thread,
            autocheckpoint,
        }))
    }

    /// Commits what `tx` stored so far, and has the thread copy it.
    fn commit_step(&self, tx: &Transaction<'_>) -> Result<()> {
        // The transaction goes on: `tx` commits or rolls back whatever follows.
        tx.execute_batch("COMMIT; BEGIN IMMEDIATE;")
            .context("committing the export rows stored so far")?;
        // A thread that ended (it never does but by panicking) just leaves the copy to the end.
        let _ = self.requests.send(());
        Ok(())
    }

    /// Waits for the copy in progress, and puts the automatic checkpoints back.
    fn finish(self, tx: &Transaction<'_>) -> Result<()> {
        drop(self.requests);
        let _ = self.thread.join();
        tx.pragma_update(None, "wal_autocheckpoint", self.autocheckpoint)?;
        Ok(())
    }
}

/// Runs `work` with SQLite allowed helper threads for sorting: a full evaluation is mostly
/// sorts (windows, GROUP BY, the index builds), and this machine's second core can take half.
fn sorting_in_parallel(tx: &Transaction<'_>, work: impl FnOnce() -> Result<()>) -> Result<()> {
    tx.pragma_update(None, "threads", SORT_THREADS)?;
    let result = work();
    tx.pragma_update(None, "threads", 0)?;
    result
}

/// Whether the SQL of `text` names `name` as a whole identifier (`mkto_opportunity` is not
/// named by `mkto_opportunity_role`), outside `--` comments: a view whose comment explains
/// itself by another does not read it.
fn mentions(text: &str, name: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .any(|code| {
            code.match_indices(name).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + name.len()..].chars().next();
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
}

/// Shadows the export view of `object` with a temp table of the columns later views read from
/// it, copied from the rows just stored (those after rowid `last`) instead of evaluating the
/// view again.
fn shadow_with_stored(tx: &Transaction<'_>, object: Object, schema: &str, last: i64) -> Result<()> {
    let name = object.view();
    tx.execute_batch(&format!(
        "DROP VIEW IF EXISTS temp.{name};
         CREATE TEMP TABLE {name} AS
         SELECT key, source_id, skip_reason, sales_person_id FROM {schema}.export_row WHERE rowid > {last};"
    ))?;
    index_view(tx, name)
}

/// The derived totals of `export_total` (name, value) over `relation`, rows of
/// `derived_opportunity`.
fn derived_totals(relation: &str) -> String {
    format!(
        "SELECT 'opportunities' AS name, count(*) AS value FROM {relation}
         UNION ALL SELECT 'opportunities_with_account', count(accountid) FROM {relation}
         UNION ALL SELECT 'contact_roles', coalesce(sum(contact_roles), 0) FROM {relation}"
    )
}

/// Adds `sign` times the (name, value) rows of `select` to the stored totals.
fn add_totals(tx: &Transaction<'_>, select: &str, sign: i64) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO main.export_total (name, value) SELECT name, ?1 * value FROM ({select}) WHERE true
             ON CONFLICT (name) DO UPDATE SET value = export_total.value + excluded.value"
        ),
        [sign],
    )?;
    // A total of nothing is no row, as a full evaluation leaves it.
    tx.execute("DELETE FROM main.export_total WHERE value = 0", [])?;
    Ok(())
}

/// What `derived_opportunity` holds, from the materialized rule views, for the opportunities
/// `filter` (a WHERE clause on `oa`, or nothing) keeps. Counted by a join grouped by
/// opportunity rather than a count per opportunity: SQLite then walks both tables' indexes on
/// opportunityid side by side, in order, where a count per opportunity looked each one up in
/// the order the opportunities were staged (6.2 s against 2.4 s at 1M opportunities whose ids
/// are in no order), and the rows come out in the order of `derived_opportunity`'s key.
fn derived(filter: &str) -> String {
    format!(
        "SELECT oa.opportunityid, oa.accountid, count(r.opportunityid)
         FROM temp.opportunity_account oa
         LEFT JOIN temp.opportunity_contact_role r ON r.opportunityid = oa.opportunityid
         {filter}
         GROUP BY oa.opportunityid"
    )
}

/// The same tables as the stored ones, as temp tables of this connection.
fn create_temp_tables(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS export_row AS SELECT * FROM main.export_row WHERE 0;
         CREATE INDEX IF NOT EXISTS temp.export_row_by_key ON export_row (object, key);
         CREATE INDEX IF NOT EXISTS temp.export_row_pending ON export_row (object) WHERE pending = 1;
         CREATE TEMP TABLE IF NOT EXISTS export_removed AS SELECT * FROM main.export_removed WHERE 0;
         CREATE TEMP TABLE IF NOT EXISTS derived_opportunity AS SELECT * FROM main.derived_opportunity WHERE 0;
         CREATE TEMP TABLE IF NOT EXISTS export_total AS SELECT * FROM main.export_total WHERE 0;",
    )?;
    Ok(())
}

/// Each view of `files`, in order, as a temp table of its name with its indexes: later views
/// (and `insert_rows`) read the temp table, which SQLite resolves before the stored view. The
/// views of `INLINED` stay views, evaluated inside the one view that reads them; a view nothing
/// after it reads (`read_later`) is not evaluated at all. `shown`, when given, names each view
/// evaluated.
fn materialize_views(
    tx: &Transaction<'_>,
    files: &[SqlFile],
    shown: Option<&crate::progress::Stages>,
) -> Result<()> {
    for file in files {
        let name = file.view_name();
        if !read_later(name) {
            continue;
        }
        if INLINED.contains(&name) {
            view_from_text(tx, file)?;
            continue;
        }
        // A read-only command has the views as temporary views; the tables take their place.
        tx.execute_batch(&format!("DROP VIEW IF EXISTS temp.{name};"))?;
        if let Some(shown) = shown {
            shown.at(&format!("evaluating {name}"));
        }
        let started = Instant::now();
        tx.execute_batch(&file.created_as("TEMP TABLE"))
            .with_context(|| format!("evaluating {}", file.path))?;
        index_view(tx, name)?;
        crate::progress::detail(&format!(
            "evaluated {name} in {} ms",
            started.elapsed().as_millis()
        ));
    }
    Ok(())
}

/// Whether a refresh reads view `name` after evaluating it: an export view's rows are stored,
/// and a rule view is read when a later view, or the counts of `derived`, names it. Others
/// (`opportunity_role_candidate`, the audit of every claim) are left to the stored view.
fn read_later(name: &str) -> bool {
    Object::from_view(name).is_some() || read_by_a_later_view(name) || mentions(&derived(""), name)
}

/// Whether a view after view `name` in `VIEWS` names it in its SQL.
fn read_by_a_later_view(name: &str) -> bool {
    let position = VIEWS.iter().position(|file| file.view_name() == name);
    let later = position.map_or(&[][..], |at| &VIEWS[at + 1..]);
    later.iter().any(|file| mentions(file.text, name))
}

/// View `file` as a temporary view of this connection, from its text: the names it reads then
/// resolve to this connection's temp tables first, where the stored view's would resolve to
/// the stored views and evaluate every rule again.
fn view_from_text(tx: &Transaction<'_>, file: &SqlFile) -> Result<()> {
    tx.execute_batch(&format!("DROP VIEW IF EXISTS temp.{};", file.view_name()))?;
    tx.execute_batch(&file.created_as("TEMP VIEW"))
        .with_context(|| format!("creating {} as a temporary view", file.path))?;
    Ok(())
}

/// The indexes of `VIEW_INDEXES` on the temp table that stands for view `name`.
fn index_view(tx: &Transaction<'_>, name: &str) -> Result<()> {
    let columns = VIEW_INDEXES
        .iter()
        .find(|(view, _)| *view == name)
        .map_or(&[][..], |(_, columns)| *columns);
    for columns in columns {
        let first = columns.split(',').next().unwrap_or(columns);
        tx.execute_batch(&format!(
            "CREATE INDEX temp.{name}_by_{first} ON {name} ({columns});"
        ))?;
    }
    Ok(())
}

/// Drops every temp table a refresh made (materialized views, subsets, targets) and every
/// temporary view (views evaluated from their text; a read-only command creates its own again).
fn drop_materialized(tx: &Transaction<'_>) -> Result<()> {
    let names = text_pairs(
        tx,
        "SELECT type, name FROM temp.sqlite_master
         WHERE (type = 'table'
                AND name NOT IN ('export_row', 'export_removed', 'derived_opportunity', 'export_total', 'rule_setting'))
            OR type = 'view'",
        [],
    )?;
    // `kind` is sqlite_master's type, 'table' or 'view': the DROP statement's own keyword.
    for (kind, name) in names {
        tx.execute_batch(&format!("DROP {kind} temp.\"{name}\";"))?;
    }
    Ok(())
}

/// Which roots of an object a partial refresh replaces: a temp table of them and its column.
fn target_table(object: Object) -> (&'static str, &'static str) {
    match object {
        Object::SalesPerson => ("target_user", "id"),
        Object::Company => ("target_account", "id"),
        Object::Lead => ("target_lead", "root"),
        Object::Opportunity | Object::OpportunityRole => ("target_opportunity", "id"),
    }
}

/// Inserts the rows of one export view, read from `from` (the view itself, or a materialized
/// temp table of it), into `into` (an `export_row` table, or a table of its columns): the root,
/// the view's columns, the `[mapping.*]` fields merged into the payload with `json_set` (paths and columns bound, never
/// pasted), and `pending` against `mkto_ack`. With `targets`, only rows whose root is in that
/// temp table.
fn insert_rows(
    tx: &Transaction<'_>,
    config: &Config,
    object: Object,
    into: &str,
    from: &str,
    targets: Option<(&str, &str)>,
) -> Result<usize> {
    let root = match object {
        Object::Lead => "coalesce(v.key, v.source_id)",
        Object::OpportunityRole => "v.opportunityid",
        _ => "v.key",
    };
    let lead_key = match object {
        Object::OpportunityRole => "v.lead_key",
        _ => "NULL",
    };
    let sales_person = match object {
        Object::Company | Object::Lead | Object::Opportunity => "v.sales_person_id",
        _ => "NULL",
    };
    let mapping = config.mapping.of(object);
    let mut params: Vec<String> = Vec::new();
    let (payload, join) = match object.source() {
        Some(source) if !mapping.is_empty() => {
            let mut payload = String::from("json_set(v.payload");
            for (field, column) in mapping {
                params.push(format!("$.\"{field}\""));
                params.push(format!("$.\"{column}\""));
                let _ = write!(
                    payload,
                    ", ?{}, json(coalesce(t.raw -> ?{}, 'null'))",
                    params.len() - 1,
                    params.len()
                );
            }
            payload.push(')');
            (
                payload,
                format!(
                    "LEFT JOIN main.{} t ON t.{} = v.source_id",
                    source.table, source.key
                ),
            )
        }
        _ => ("v.payload".to_string(), String::new()),
    };
    params.push(object.name().to_string());
    let object_param = params.len();
    let filter = match targets {
        Some((table, column)) => format!("WHERE {root} IN (SELECT {column} FROM temp.{table})"),
        None => String::new(),
    };
    let sql = format!(
        "INSERT INTO {into} ({ROW_COLUMNS})
         SELECT ?{object_param}, root, key, source_id, payload, skip_reason, lead_key, sales_person_id,
             skip_reason IS NULL AND key IS NOT NULL AND payload IS NOT NULL
             AND payload IS NOT (SELECT a.payload FROM main.mkto_ack a WHERE a.object = ?{object_param} AND a.key = r.key)
         FROM (
             SELECT {root} AS root, v.key, v.source_id, {payload} AS payload, v.skip_reason,
                 {lead_key} AS lead_key, {sales_person} AS sales_person_id
             FROM {from} v {join} {filter}
             -- An OFFSET keeps SQLite from flattening this into the outer query, which would
             -- compute the view's payload once for each time the outer query names it.
             LIMIT -1 OFFSET 0
         ) r"
    );
    Ok(tx.execute(&sql, rusqlite::params_from_iter(&params))?)
}

/// The roots a change touched, re-evaluated over the records they depend on. `None` when they
/// are too many for that to pay (the caller then evaluates in full).
fn incremental(tx: &Transaction<'_>, config: &Config) -> Result<Option<Refresh>> {
    let [targets, subset] = REFRESH;
    let step = Step::start();
    tx.execute_batch(targets.text)
        .with_context(|| format!("running {}", targets.path))?;
    step.done("found the roots the changes touch");
    let count = |sql: &str| -> Result<usize> {
        Ok(tx.query_row(sql, [], |r| r.get::<_, i64>(0))? as usize)
    };
    let opportunities = count("SELECT count(*) FROM temp.target_opportunity")?;
    // Staged records are never deleted (tombstones), so the largest rowid is the count, read
    // without a scan.
    let total = count("SELECT coalesce(max(rowid), 0) FROM main.opportunity")?;
    if opportunities as f64 > INCREMENTAL_SHARE * total as f64 && opportunities > 1000 {
        drop_materialized(tx)?;
        return Ok(None);
    }
    let leads = count("SELECT count(*) FROM temp.target_lead")?;
    let companies = count("SELECT count(*) FROM temp.target_account")?;
    let step = Step::start();
    tx.execute_batch(subset.text)
        .with_context(|| format!("running {}", subset.path))?;
    step.done("copied the staged records those roots depend on");
    let (sales_person_view, rule_views) = VIEWS.split_last().expect("VIEWS is not empty");
    materialize_views(tx, rule_views, None)?;

    // The stored rows each object's replacement deletes, noted (their keys decide what may now
    // need deleting in Marketo), and the fresh rows it compares them with.
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE replaced (object TEXT, key TEXT, sales_person_id TEXT);
         CREATE TEMP TABLE fresh_row AS SELECT {ROW_COLUMNS} FROM main.export_row WHERE false;
         CREATE INDEX temp.fresh_row_by_root ON fresh_row (object, root);"
    ))?;
    for object in Object::ALL
        .into_iter()
        .filter(|o| *o != Object::SalesPerson)
    {
        let step = Step::start();
        replace_roots(tx, config, object)?;
        step.done(&format!("replaced the changed rows of {}", object.view()));
    }
    let step = Step::start();

    // Only the target opportunities whose counts moved are written: a change of amount or stage
    // leaves most as they were, and rewriting them all dirtied a leaf of the table for each.
    tx.execute_batch(&format!(
        "CREATE TEMP TABLE derived_fresh (opportunityid TEXT PRIMARY KEY, accountid TEXT,
             contact_roles INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO derived_fresh {};
         CREATE TEMP TABLE derived_moved AS
         SELECT t.id AS opportunityid, d.opportunityid IS NOT NULL AS stored,
                f.opportunityid IS NOT NULL AS fresh,
                d.accountid AS stored_accountid, d.contact_roles AS stored_contact_roles,
                f.accountid, f.contact_roles
         FROM temp.target_opportunity t
         LEFT JOIN main.derived_opportunity d ON d.opportunityid = t.id
         LEFT JOIN derived_fresh f ON f.opportunityid = t.id
         WHERE coalesce(d.opportunityid, f.opportunityid) IS NOT NULL
           AND (d.opportunityid IS NULL OR f.opportunityid IS NULL
                OR d.accountid IS NOT f.accountid OR d.contact_roles IS NOT f.contact_roles);",
        derived("WHERE oa.opportunityid IN (SELECT id FROM temp.target_opportunity)")
    ))?;
    add_totals(
        tx,
        &derived_totals(
            "(SELECT opportunityid, stored_accountid AS accountid,
                     stored_contact_roles AS contact_roles
              FROM temp.derived_moved WHERE stored)",
        ),
        -1,
    )?;
    add_totals(
        tx,
        &derived_totals("(SELECT * FROM temp.derived_moved WHERE fresh)"),
        1,
    )?;
    tx.execute_batch(
        "DELETE FROM main.derived_opportunity
         WHERE opportunityid IN (SELECT opportunityid FROM temp.derived_moved WHERE stored AND NOT fresh);
         INSERT INTO main.derived_opportunity (opportunityid, accountid, contact_roles)
         SELECT opportunityid, accountid, contact_roles FROM temp.derived_moved WHERE fresh
         ORDER BY opportunityid
         ON CONFLICT (opportunityid) DO UPDATE SET
             accountid = excluded.accountid, contact_roles = excluded.contact_roles;",
    )?;
    step.done("counted the target opportunities again");

    let step = Step::start();
    // Sales persons: every user a replaced row named before or names now, or that changed,
    // evaluated from the stored rows that name those users. `mkto_sales_person` asks only
    // whether an unskipped company, lead or opportunity names a user, so one such row per user
    // and object stands in for the view: copying every row that names a user copied nearly all
    // of them when a change reached most owners (at 300k opportunities, a 1% change spread over
    // every owner took the refresh 7.5 s instead of 3.3 s).
    tx.execute_batch(
        "CREATE TEMP TABLE target_user (id TEXT PRIMARY KEY) WITHOUT ROWID;
         INSERT OR IGNORE INTO target_user
         SELECT sales_person_id FROM temp.replaced WHERE sales_person_id IS NOT NULL
         UNION SELECT u.systemuserid FROM main.export_dirty d JOIN main.systemuser u ON u.systemuserid = d.value
             WHERE d.kind IN ('id', 'row');
         INSERT OR IGNORE INTO target_user
         SELECT e.sales_person_id FROM temp.target_opportunity t
             CROSS JOIN main.export_row e ON e.object = 'opportunity' AND e.root = t.id
         UNION SELECT e.sales_person_id FROM temp.target_lead t
             CROSS JOIN main.export_row e ON e.object = 'lead' AND e.root = t.root
         UNION SELECT e.sales_person_id FROM temp.target_account t
             CROSS JOIN main.export_row e ON e.object = 'company' AND e.root = t.id;
         DROP TABLE temp.mkto_company;
         DROP TABLE temp.mkto_lead;
         DROP TABLE temp.mkto_opportunity;",
    )?;
    for object in [Object::Company, Object::Lead, Object::Opportunity] {
        tx.execute(
            &format!(
                "CREATE TEMP TABLE {} AS SELECT e.* FROM temp.target_user u
                 CROSS JOIN main.export_row e ON e.rowid = (
                     SELECT x.rowid FROM main.export_row x
                     WHERE x.object = ?1 AND x.sales_person_id = u.id AND x.skip_reason IS NULL
                     LIMIT 1)",
                object.view()
            ),
            [object.name()],
        )?;
    }
    materialize_views(tx, std::slice::from_ref(sales_person_view), None)?;
    replace_roots(tx, config, Object::SalesPerson)?;
    step.done("evaluated the sales persons of the users concerned");

    let step = Step::start();
    // Keys Marketo holds that the views no longer give; keys given again are no longer removed.
    tx.execute_batch(
        "INSERT OR IGNORE INTO main.export_removed (object, key)
         SELECT r.object, r.key FROM temp.replaced r
         WHERE r.key IS NOT NULL
           AND EXISTS (SELECT 1 FROM main.mkto_ack a WHERE a.object = r.object AND a.key = r.key)
           AND NOT EXISTS (SELECT 1 FROM main.export_row e WHERE e.object = r.object AND e.key = r.key);
         DELETE FROM main.export_removed
         WHERE EXISTS (SELECT 1 FROM main.export_row e
                       WHERE e.object = export_removed.object AND e.key = export_removed.key);",
    )?;
    drop_materialized(tx)?;
    step.done("noted the keys Marketo holds that no row gives now");
    Ok(Some(Refresh::Incremental {
        opportunities,
        leads,
        companies,
    }))
}

/// A step of a refresh, timed for `-v`.
struct Step(Instant);

impl Step {
    fn start() -> Step {
        Step(Instant::now())
    }

    fn done(self, what: &str) {
        crate::progress::detail(&format!("{what} in {} ms", self.0.elapsed().as_millis()));
    }
}

/// Replaces the stored rows of `object` whose root is a target with the freshly evaluated ones,
/// noting the replaced keys in `temp.replaced`. A stored row the evaluation gives again as it
/// is stays as it is: rewriting it would only churn `export_row`'s five indexes (a 1% change
/// targets the roles and leads of every opportunity it touches, most of them unchanged); one
/// given again with the same root and key but other columns is updated in place.
fn replace_roots(tx: &Transaction<'_>, config: &Config, object: Object) -> Result<()> {
    let (table, column) = target_table(object);
    let from = format!("temp.{}", object.view());
    tx.execute("DELETE FROM temp.fresh_row", [])?;
    insert_rows(
        tx,
        config,
        object,
        "temp.fresh_row",
        &from,
        Some((table, column)),
    )
    .with_context(|| format!("evaluating {} for the changed records", object.view()))?;
    // Every column, so that one added to `export_row` is compared too; IS, as most may be null
    // (on the others it is =, served by the same index on (object, root)).
    let same = ROW_COLUMNS
        .split(", ")
        .map(|column| format!("f.{column} IS e.{column}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    // `kept`: the fresh rows give the stale row's root and key again, with other columns.
    tx.execute(
        &format!(
            "CREATE TEMP TABLE stale AS
             SELECT e.rowid AS id, e.object, e.key, e.sales_person_id, e.root,
                 {} AS unsendable,
                 EXISTS (SELECT 1 FROM temp.fresh_row f
                         WHERE f.object = e.object AND f.root = e.root AND f.key = e.key) AS kept
             FROM main.export_row e
             WHERE e.object = ?1 AND e.root IN (SELECT {column} FROM temp.{table})
               AND NOT EXISTS (SELECT 1 FROM temp.fresh_row f WHERE {same})",
            unsendable("e")
        ),
        [object.name()],
    )?;
    // A skipped row replaced, or a new one, changes the problems of its root: the next push
    // re-checks them (`problem::check_unsendable`).
    tx.execute_batch(&format!(
        "INSERT INTO temp.replaced SELECT object, key, sales_person_id FROM temp.stale;
         INSERT OR IGNORE INTO main.export_skip_root (object, root)
         SELECT object, root FROM temp.stale WHERE unsendable
         UNION SELECT f.object, f.root FROM temp.fresh_row f
         WHERE {} AND NOT EXISTS (SELECT 1 FROM main.export_row e WHERE {same});",
        unsendable("f")
    ))?;
    // A kept row is updated in place: its rowid stays, and so do its entries in the indexes on
    // the columns that are not set (the root and the key, which it has again). A 1% change
    // gives most of the opportunities and leads it touches a new payload and nothing else, and
    // deleting and inserting each of them rewrote a leaf of every index of `export_row`.
    // Whatever it updates then equals a fresh row, so the insert below leaves that row out.
    let changed = ROW_COLUMNS
        .split(", ")
        .filter(|column| !["object", "root", "key"].contains(column))
        .map(|column| format!("{column} = f.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute(
        &format!(
            "UPDATE main.export_row AS e SET {changed}
             FROM temp.stale s
             JOIN temp.fresh_row f ON f.object = s.object AND f.root = s.root AND f.key = s.key
             WHERE s.kept AND e.rowid = s.id"
        ),
        [],
    )?;
    let deleted = tx.execute(
        "DELETE FROM main.export_row WHERE rowid IN (SELECT id FROM temp.stale WHERE NOT kept)",
        [],
    )?;
    tx.execute_batch("DROP TABLE temp.stale;")?;
    let inserted = tx.execute(
        &format!(
            "INSERT INTO main.export_row ({ROW_COLUMNS})
             SELECT {ROW_COLUMNS} FROM temp.fresh_row f
             WHERE NOT EXISTS (SELECT 1 FROM main.export_row e WHERE {same})"
        ),
        [],
    )?;
    let change = inserted as i64 - deleted as i64;
    let rows = format!("SELECT 'rows:{}' AS name, {change} AS value", object.name());
    add_totals(tx, &rows, 1)
}

/// A row that differs between the stored export rows and a fresh evaluation of the views.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Difference {
    pub object: String,
    pub key: Option<String>,
    pub source_id: String,
    /// "stored only", "fresh only".
    pub side: &'static str,
}

/// Compares the stored rows with a fresh full evaluation of the views (into temp tables):
/// every row of either that the other lacks, column for column (pending included), plus the
/// removed keys, the derived counts per opportunity and the totals. Empty when they agree.
pub(crate) fn verify(conn: &mut Connection, config: &Config) -> Result<Vec<Difference>> {
    let tx = conn.transaction()?;
    full(&tx, config, "temp", None)?;
    let mut differences = Vec::new();
    for (side, left, right) in [
        ("stored only", "main", "temp"),
        ("fresh only", "temp", "main"),
    ] {
        let sql = format!(
            "SELECT object, key, source_id FROM (SELECT {ROW_COLUMNS} FROM {left}.export_row
                 EXCEPT SELECT {ROW_COLUMNS} FROM {right}.export_row)
             UNION ALL
             SELECT object, key, '' FROM (SELECT object, key FROM {left}.export_removed
                 EXCEPT SELECT object, key FROM {right}.export_removed)
             UNION ALL
             SELECT 'derived_opportunity', opportunityid, '' FROM (
                 SELECT * FROM {left}.derived_opportunity EXCEPT SELECT * FROM {right}.derived_opportunity)
             UNION ALL
             SELECT 'export_total', name, CAST(value AS TEXT) FROM (
                 SELECT * FROM {left}.export_total EXCEPT SELECT * FROM {right}.export_total)
             ORDER BY 1, 2, 3"
        );
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt.query_map([], |r| {
            Ok(Difference {
                object: r.get(0)?,
                key: r.get(1)?,
                source_id: r.get(2)?,
                side,
            })
        })?;
        for row in rows {
            differences.push(row?);
        }
    }
    Ok(differences)
}

#[cfg(test)]
mod tests;
