//! One file per subcommand, glue only: they call the library and print; SQL lives in `sql/` and
//! the modules that own it, HTTP in the clients.
//!
//! `run` opens the database, records the command in the `run` table, dispatches, and closes the
//! run with its outcome, so every command leaves a trace `status` can show.

mod check;
mod demo;
mod explain;
mod init;
mod plan;
mod pull;
mod push;
mod recheck;
mod sim;
mod status;
mod sync;
mod verify;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::cli::{Cli, Command, PullArgs};
use crate::config::Config;
use crate::db::{self, WriterLock};
use crate::exit::Outcome;
use crate::progress::Level;
use crate::{rules, run};

/// What every command gets: the open database, the configuration and how much to say.
pub(crate) struct Context {
    pub conn: Connection,
    pub config: Config,
    pub run_id: i64,
    /// How much to print besides errors and warnings (`-q`, `-v`).
    pub verbosity: Level,
    /// Counters the command reports; stored with its run.
    pub counts: Value,
}

/// The plan for push (`push`, `sync`, `demo`), with `-v` saying how the export rows were
/// brought up to date.
fn load_plan(ctx: &mut Context) -> Result<crate::plan::Plan> {
    let plan = crate::plan::load(&mut ctx.conn, &ctx.config)?;
    if let Some(refreshed) = &plan.refreshed {
        ctx.detail(refreshed.describe());
    }
    Ok(plan)
}

/// The Marketo client of a writing command, its limiter counting the REST calls the commands
/// before it made lately (`api_call`, twice a window's allowance of rows): a push started right
/// after another, or after `recheck`, would otherwise meet Marketo's 606.
fn marketo_client(ctx: &Context) -> Result<crate::export::client::MarketoClient> {
    let client = crate::export::client::MarketoClient::new(&ctx.config.marketo)?;
    let rows = 2 * ctx.config.marketo.rate_limit_calls as usize;
    client.remember_calls(crate::export::push::logged_call_ages(&ctx.conn, rows)?);
    Ok(client)
}

impl Context {
    /// Prints a line of progress unless `-q` was given (secrets cut, as everywhere).
    pub(crate) fn say(&self, line: impl AsRef<str>) {
        crate::progress::say(line.as_ref());
    }

    /// Prints a line only with `-v`.
    pub(crate) fn detail(&self, line: impl AsRef<str>) {
        crate::progress::detail(line.as_ref());
    }
}

/// Runs the parsed command line. Commands that write hold the writer lock, open (creating and
/// migrating) the database and record their run; read-only ones do neither.
pub fn run(cli: Cli) -> Result<Outcome> {
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Level::Quiet,
        (false, 0) => Level::Normal,
        (false, _) => Level::Verbose,
    };
    crate::progress::init(verbosity, prints_json(&cli.command));
    // The simulators serve until stopped and touch no database.
    if let Command::Sim { target } = &cli.command {
        return sim::run(target);
    }
    let (name, args, writes) = describe(&cli.command);
    let db_path = cli.db_path();
    // Commands that change staged or pushed state hold the writer lock for their whole run.
    let json_result = wants_json(&cli.command);
    let lock = db::check_path(&db_path, writes)
        .and_then(|()| writes.then(|| WriterLock::acquire(&db_path)).transpose())
        .inspect_err(|err| {
            if json_result {
                print_unrecorded(name, None, err);
            }
        })?;
    if matches!(cli.command, Command::Demo) && cli.db.is_none() {
        // The demo starts afresh in its own default database, never in one given with --db.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
        }
    }
    if !writes {
        // A file written during an unlocked read reads as damaged when it is not: `vouch` says
        // so in an error of its own, which carries no SQLite error for the advice to act on.
        return read_only(&cli, &db_path, verbosity)
            .map_err(|err| db::with_storage_advice(err, &db_path));
    }
    if matches!(
        cli.command,
        Command::Pull(_) | Command::Push { .. } | Command::Sync { .. } | Command::Recheck { .. }
    ) {
        // A stop then lands at a safe point: what is in flight answered and recorded, the run
        // closed as stopped (exit 1, or 0 ending a `sync --every`), rather than killed.
        crate::stop::install()?;
    }
    if let Command::Sync {
        every: Some(every),
        max_cycles,
        ..
    } = &cli.command
    {
        return sync::every(
            *every,
            *max_cycles,
            |_cycle| record_run(&cli, name, &args, &db_path, verbosity, json_result),
            |waiting| {
                if let Some(lock) = &lock {
                    lock.note_waiting(waiting);
                }
            },
        );
    }
    record_run(&cli, name, &args, &db_path, verbosity, json_result)
}

/// Runs a read-only command: the database opened read-only and no run recorded, so that an
/// auditor with read access can use them and they leave no trace. `check` works before the
/// first pull: without a database it checks all but the fields.
fn read_only(cli: &Cli, db_path: &Path, verbosity: Level) -> Result<Outcome> {
    let (conn, unlocked) = if matches!(cli.command, Command::Check { .. }) && !db_path.is_file() {
        (db::open_scratch()?, None)
    } else {
        let read = db::open_read_only(db_path)?;
        (read.conn, read.unlocked)
    };
    let mut ctx = Context {
        conn,
        config: Config::default(),
        run_id: 0,
        verbosity,
        counts: json!({}),
    };
    let (config, _source) = Config::load(cli.config.as_deref())?;
    ctx.config = config;
    let result = rules::install_temporary(&mut ctx.conn, &ctx.config.rules, &ctx.config.export)
        .and_then(|()| dispatch(&mut ctx, &cli.command));
    // Said after what was shown, which cannot be taken back; the exit code says it too.
    match unlocked {
        Some(read) => read.vouch(result),
        None => result,
    }
}

/// Opens the database, records one run of the command, runs it, and closes the run with its
/// outcome (printing the `--json` result when asked).
fn record_run(
    cli: &Cli,
    name: &'static str,
    args: &[String],
    db_path: &Path,
    verbosity: Level,
    json_result: bool,
) -> Result<Outcome> {
    let started = Instant::now();
    let opened = db::open(db_path).and_then(|conn| {
        let run_id = run::start(&conn, name, args).context("recording the run")?;
        Ok((conn, run_id))
    });
    let (conn, run_id) = opened
        .map_err(|err| db::with_storage_advice(err, db_path))
        .inspect_err(|err| {
            if json_result {
                print_unrecorded(name, None, err);
            }
        })?;
    let mut ctx = Context {
        conn,
        config: Config::default(),
        run_id,
        verbosity,
        counts: counts_before(name),
    };
    let result = configure(&mut ctx, cli.config.as_deref())
        .and_then(|()| dispatch(&mut ctx, &cli.command))
        .map_err(|err| db::with_storage_advice(err, db_path));
    let finished = match run::finish(&ctx.conn, run_id, &result, &ctx.counts) {
        Ok(finished) => finished,
        // The run stays `running` in the table (`status` shows it interrupted); the failure
        // that stopped the command is what to say, not the one recording it met after it
        // (a full disk or a damaged file fails both).
        Err(err) => {
            let recording = db::with_storage_advice(err, db_path);
            let failed = match result {
                Err(failed) => failed,
                Ok(_) => recording.context("recording the run's outcome"),
            };
            if json_result {
                print_unrecorded(name, Some(run_id), &failed);
            }
            return Err(failed);
        }
    };
    run::prune(&mut ctx.conn, ctx.config.history.keep_days)
        .context("pruning history older than history.keep_days")?;
    if json_result {
        print_result(&ctx, name, &finished, started);
    }
    result
}

/// A run's counts before its command does anything. A pull or sync says it staged nothing yet,
/// so that one that fails before staging (bad settings, Dynamics unreachable) is removed by
/// `run::prune` once old, like a cycle that found no change, rather than kept for good.
fn counts_before(name: &str) -> Value {
    match name {
        "pull" => pull::nothing_staged(),
        "sync" => json!({"pull": pull::nothing_staged()}),
        _ => json!({}),
    }
}

/// Whether the command prints JSON on stdout (any `--json`), so that its progress lines go to
/// stderr: `plan --json` that evaluates the export rows first still prints one JSON document.
fn prints_json(command: &Command) -> bool {
    match command {
        Command::Pull(args) => args.json,
        Command::Plan { json }
        | Command::Push { json, .. }
        | Command::Recheck { json, .. }
        | Command::Sync { json, .. }
        | Command::Check { json }
        | Command::Status { json, .. }
        | Command::Verify { json }
        | Command::Explain { json, .. } => *json,
        Command::Init | Command::Demo | Command::Sim { .. } => false,
    }
}

/// Whether the command was asked for its result as one JSON object (`pull`, `push`, `sync`).
fn wants_json(command: &Command) -> bool {
    matches!(
        command,
        Command::Pull(_) | Command::Push { .. } | Command::Sync { .. } | Command::Recheck { .. }
    ) && prints_json(command)
}

/// The `--json` result of a command whose run could not be recorded (the database is locked by
/// another writer, or cannot be opened), or whose outcome could not (`run_id`, the run left
/// `running`: a full disk or a damaged file fails the recording too).
fn print_unrecorded(command: &str, run_id: Option<i64>, err: &anyhow::Error) {
    let finished = run::Finished {
        outcome: if crate::exit::is_usage(err) {
            "usage_error"
        } else {
            "failed"
        },
        exit_code: crate::exit::code_for(err),
        message: Some(crate::exit::error_line(err)),
    };
    print_json(run_id, command, &finished, 0, 0, &json!({}));
}

/// The `--json` result of `pull`, `push` and `sync` (a stable contract, README "JSON output"):
/// exactly one object on stdout, also when the command failed.
fn print_result(ctx: &Context, command: &str, finished: &run::Finished, started: Instant) {
    let rest_calls: i64 = ctx
        .conn
        .query_row(
            "SELECT count(*) FROM api_call WHERE run_id = ?1 AND path LIKE '/rest/%'",
            [ctx.run_id],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let duration_ms = started.elapsed().as_millis() as u64;
    print_json(
        Some(ctx.run_id),
        command,
        finished,
        duration_ms,
        rest_calls,
        &ctx.counts,
    );
}

fn print_json(
    run_id: Option<i64>,
    command: &str,
    finished: &run::Finished,
    duration_ms: u64,
    rest_calls: i64,
    counts: &Value,
) {
    let result = json!({
        "run_id": run_id,
        "command": command,
        "outcome": finished.outcome,
        "exit_code": finished.exit_code,
        "message": finished.message,
        "duration_ms": duration_ms,
        "rest_calls": rest_calls,
        "counts": counts,
    });
    outln!("{}", crate::redact::json(&result));
}

fn configure(ctx: &mut Context, explicit: Option<&Path>) -> Result<()> {
    let (config, _source) = Config::load(explicit)?;
    ctx.config = config;
    rules::install(&mut ctx.conn, &ctx.config.rules, &ctx.config.export)?;
    Ok(())
}

fn dispatch(ctx: &mut Context, command: &Command) -> Result<Outcome> {
    match command {
        Command::Init => init::run(ctx),
        Command::Pull(PullArgs {
            fixtures: Some(dir),
            full,
            ..
        }) => pull::run(ctx, dir, *full),
        Command::Pull(PullArgs {
            fixtures: None,
            full,
            ..
        }) => pull::run_live(ctx, *full),
        Command::Status { json, stale_after } => status::run(ctx, *json, *stale_after),
        Command::Check { json } => check::run(ctx, *json),
        Command::Plan { json } => plan::run(ctx, *json),
        Command::Push { dry_run, .. } => push::run(ctx, *dry_run),
        Command::Recheck { roles, .. } => recheck::run(ctx, *roles),
        Command::Sync {
            fixtures,
            full,
            dry_run,
            ..
        } => sync::run(ctx, fixtures.as_deref(), *full, *dry_run),
        Command::Demo => demo::run(ctx),
        Command::Verify { json } => verify::run(ctx, *json),
        Command::Explain {
            opportunity_id,
            json,
        } => explain::run(ctx, opportunity_id, *json),
        Command::Sim { target } => sim::run(target),
    }
}

/// The command's name, its arguments as recorded in `run.args`, and whether it writes.
fn describe(command: &Command) -> (&'static str, Vec<String>, bool) {
    match command {
        Command::Init => ("init", vec![], true),
        Command::Pull(args) => {
            let mut recorded = Vec::new();
            if let Some(dir) = &args.fixtures {
                recorded.extend(["--fixtures".to_string(), dir.display().to_string()]);
            }
            if args.full {
                recorded.push("--full".to_string());
            }
            ("pull", recorded, true)
        }
        Command::Plan { .. } => ("plan", vec![], false),
        Command::Push { dry_run: true, .. } => ("push", vec!["--dry-run".to_string()], false),
        Command::Push { dry_run: false, .. } => ("push", vec![], true),
        Command::Recheck { roles, .. } => (
            "recheck",
            roles.then(|| "--roles".to_string()).into_iter().collect(),
            true,
        ),
        Command::Sync {
            fixtures,
            full,
            dry_run,
            ..
        } => {
            let mut recorded: Vec<String> = fixtures
                .iter()
                .flat_map(|dir| ["--fixtures".to_string(), dir.display().to_string()])
                .collect();
            if *full {
                recorded.push("--full".to_string());
            }
            if *dry_run {
                recorded.push("--dry-run".to_string());
            }
            ("sync", recorded, true)
        }
        Command::Status { .. } => ("status", vec![], false),
        Command::Verify { .. } => ("verify", vec![], false),
        Command::Check { .. } => ("check", vec![], false),
        Command::Explain { opportunity_id, .. } => ("explain", vec![opportunity_id.clone()], false),
        Command::Sim { .. } => ("sim", vec![], false),
        Command::Demo => ("demo", vec![], true),
    }
}
