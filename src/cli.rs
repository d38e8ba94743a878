//! The command line of PRODUCT.md section 4, as clap derive types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Transparent one-way sync of Dynamics 365 opportunities into Marketo Engage.
#[derive(Debug, Parser)]
#[command(name = "oppsync", version, about, propagate_version = true)]
pub struct Cli {
    /// The SQLite database holding staged records, rule views and push history
    /// [default: ./oppsync.db; ./oppsync-demo.db for `demo`].
    #[arg(long, global = true, env = "OPPSYNC_DB")]
    pub db: Option<PathBuf>,

    /// The configuration file (default: ./oppsync.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,

    /// Say more: each page staged, each rejected record.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Say nothing but errors and warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or migrate the database (every command does this too).
    Init,
    /// Stage Web API pages from a fixture folder, or from the live Dynamics Web API.
    Pull(PullArgs),
    /// Show what push would send, per object and action, and the API calls it needs.
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send the plan to Marketo.
    Push {
        /// Compute and show the batches without sending them.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object at the end (the run's result) and the progress on stderr.
        #[arg(long, conflicts_with = "dry_run")]
        json: bool,
    },
    /// Ask Marketo whether it still holds every company, lead and opportunity it acknowledged,
    /// and send again (with the next push) those deleted or merged there since.
    Recheck {
        /// Ask about every acknowledged opportunity role too, by its marketoGUID: a role
        /// deleted in Marketo while its lead and opportunity stay (150 roles a call; at 1M
        /// opportunities with 2.5 roles each, about 17,000 calls, a third of Marketo's daily
        /// quota).
        #[arg(long)]
        roles: bool,
        /// Print one JSON object at the end (the run's result) and the progress on stderr.
        #[arg(long)]
        json: bool,
    },
    /// Pull, then push.
    Sync {
        /// Pull from this fixture folder instead of the live Web API.
        #[arg(long, value_name = "DIR")]
        fixtures: Option<PathBuf>,
        /// Pull in full (see `pull --full`).
        #[arg(long)]
        full: bool,
        /// Pull, then show what push would send, and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object at the end (the run's result) and the progress on stderr.
        #[arg(long, conflicts_with = "dry_run")]
        json: bool,
        /// Run a cycle (pull, then push) every DURATION (`30s`, `5m`, `1h`, `1h30m`) until SIGTERM or
        /// SIGINT, holding the writer lock in between.
        #[arg(long, value_name = "DURATION", value_parser = parse_every)]
        every: Option<std::time::Duration>,
        /// With --every: stop after N cycles (at least 1).
        #[arg(long, value_name = "N", requires = "every", value_parser = clap::value_parser!(u32).range(1..))]
        max_cycles: Option<u32>,
    },
    /// Check the setup: settings, Dynamics access, tables and columns, change tracking, Marketo
    /// credentials, native CRM sync, fields, API usage; one line per item, and the fix.
    Check {
        /// Print the checklist as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recent runs, staged record counts, rejected records.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 1 when no push or sync finished within DURATION (`30m`, `2h`; at most 24h),
        /// saying when the last one did and the newest failure: a check for a monitor.
        #[arg(long, value_name = "DURATION", value_parser = parse_every)]
        stale_after: Option<std::time::Duration>,
    },
    /// Check that the stored export rows equal a fresh evaluation of the rule views.
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Why an opportunity got the account and contact roles it got.
    Explain {
        /// The Dynamics opportunityid (a GUID).
        opportunity_id: String,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a local simulator of Marketo or Dynamics.
    Sim {
        #[command(subcommand)]
        target: SimTarget,
    },
    /// The whole pipeline on the bundled fixtures against the Marketo simulator.
    Demo,
}

impl Cli {
    /// The database path: `--db`, else `OPPSYNC_DB`, else the command's default.
    pub fn db_path(&self) -> PathBuf {
        match (&self.db, &self.command) {
            (Some(path), _) => path.clone(),
            (None, Command::Demo) => PathBuf::from("oppsync-demo.db"),
            (None, _) => PathBuf::from("oppsync.db"),
        }
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Stage every *.json page below DIR, in path order, instead of calling the Web API.
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// The pulled entity sets are complete snapshots: staged records missing from them are deleted.
    #[arg(long)]
    pub full: bool,
    /// Print one JSON object at the end (the run's result) and the progress on stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SimTarget {
    /// The Marketo REST API simulator, on 127.0.0.1.
    Marketo(SimMarketoArgs),
    /// The Dataverse Web API simulator, serving a fixture folder on 127.0.0.1.
    Dynamics(SimDynamicsArgs),
}

#[derive(Debug, Args)]
pub struct SimDynamicsArgs {
    /// The fixture folder to serve (every *.json Web API page below it): version 1.
    #[arg(long, value_name = "DIR")]
    pub fixtures: PathBuf,
    /// A second folder applied on top as version 2 (upserts and deletes), made current by
    /// `POST /sim/advance`; delta links then return the difference.
    #[arg(long, value_name = "DIR")]
    pub next: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one; the URL is printed).
    #[arg(long, default_value_t = 8471)]
    pub port: u16,
    /// Largest page served, whatever `odata.maxpagesize` asks (Dataverse: 5000).
    #[arg(long, default_value_t = 5000)]
    pub page_size: usize,
    /// The client id the token endpoint accepts.
    #[arg(long, default_value = "oppsync-sim")]
    pub client_id: String,
    /// The client secret the token endpoint accepts (client credentials).
    #[arg(long, default_value = "oppsync-sim-secret")]
    pub client_secret: String,
    /// The username the token endpoint accepts (ROPC).
    #[arg(long, default_value = "sync@oppsync-sim.example")]
    pub username: String,
    /// The password the token endpoint accepts (ROPC).
    #[arg(long, default_value = "oppsync-sim-password")]
    pub password: String,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Answer `expires_in` as a string, as Entra ID's v1 endpoint does.
    #[arg(long)]
    pub expires_in_string: bool,
    /// Answer every Nth Web API request with 429 (0: never).
    #[arg(long, default_value_t = 0)]
    pub throttle_every: u64,
    /// The Retry-After of a 429, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// Entity sets whose table has change tracking off (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub no_change_tracking: Vec<String>,
    /// Added latency per Web API request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

#[derive(Debug, Args)]
pub struct SimMarketoArgs {
    /// Port on 127.0.0.1 (0 picks a free one; the URL is printed).
    #[arg(long, default_value_t = 8470)]
    pub port: u16,
    /// The client id the identity endpoint accepts.
    #[arg(long, default_value = "oppsync-sim")]
    pub client_id: String,
    /// The client secret the identity endpoint accepts.
    #[arg(long, default_value = "oppsync-sim-secret")]
    pub client_secret: String,
    /// Token lifetime in seconds (Marketo: 3600).
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// REST calls allowed per window before 606 (Marketo: 100).
    #[arg(long, default_value_t = 100)]
    pub rate_limit_calls: usize,
    /// The rate window in seconds (Marketo: 20).
    #[arg(long, default_value_t = 20)]
    pub rate_limit_window: u64,
    /// Calls in flight before 615 (Marketo: 10).
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// REST calls allowed before 607 (Marketo: 50,000 a day on most subscriptions).
    #[arg(long, default_value_t = 50_000)]
    pub daily_quota: u64,
    /// Added latency per REST call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Up to this many more milliseconds of latency, drawn per call.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Probability (0 to 1) that a REST call fails with a transient error (604, 608, 611, 713, HTTP 502).
    #[arg(long, default_value_t = 0.0)]
    pub transient_rate: f64,
    /// Seed for ids and fault injection (0: from the clock).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Act as an instance that runs Marketo's native CRM sync: the opportunity, company, role
    /// and sales person APIs answer 1018.
    #[arg(long)]
    pub native_crm_sync: bool,
}

/// A cycle interval: whole numbers of hours, minutes and seconds, in that order (`30s`, `5m`,
/// `1h`, `1h30m`; a number alone is seconds), from one second to a day.
pub fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration such as 30s, 5m, 1h or 1h30m");
    let seconds = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().map_err(|_| bad())?
    } else if text.is_empty() {
        return Err(bad());
    } else {
        let mut total: u64 = 0;
        let mut rest = text;
        // Each unit at most once, larger ones first.
        let mut units: &[(char, u64)] = &[('h', 3600), ('m', 60), ('s', 1)];
        while !rest.is_empty() {
            let at = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (number, tail) = rest.split_at(at);
            let number: u64 = number.parse().map_err(|_| bad())?;
            let unit = tail.chars().next().ok_or_else(bad)?;
            let position = units.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
            total = number
                .checked_mul(units[position].1)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(bad)?;
            units = &units[position + 1..];
            rest = &tail[unit.len_utf8()..];
        }
        total
    };
    if !(1..=86_400).contains(&seconds) {
        return Err(format!("{text:?} must be between 1s and 24h"));
    }
    Ok(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn intervals_take_seconds_minutes_or_hours_within_a_day() {
        assert_eq!(parse_every("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_every("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_every("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_every("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_every("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_every("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_every("1h0m5s"), Ok(Duration::from_secs(3605)));
        for bad in [
            "0s",
            "25h",
            "23h61m",
            "5x",
            "m",
            "-1s",
            "18446744073709551615h",
            "",
            "30m1h",
            "1h1h",
            "1h30",
            "1.5h",
            "1h 30m",
        ] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_cycles_is_at_least_one() {
        use clap::Parser as _;
        let sync =
            |n: &str| Cli::try_parse_from(["oppsync", "sync", "--every", "5m", "--max-cycles", n]);
        assert!(sync("1").is_ok());
        // 0 used to run one cycle, as 1 does.
        let err = sync("0").unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
