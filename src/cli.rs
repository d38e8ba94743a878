//! The command line of PRODUCT.md section 4, as clap derive types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Transparent one-way sync of Dynamics 365 opportunities into Marketo Engage.
#[derive(Debug, Parser)]
#[command(name = "oppsync", version, about, propagate_version = true)]
pub struct Cli {
    /// The SQLite database holding staged records, rule views and push history.
    #[arg(long, global = true, env = "OPPSYNC_DB", default_value = "oppsync.db")]
    pub db: PathBuf,

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
    },
    /// Pull, then push.
    Sync {
        /// Pull from this fixture folder instead of the live Web API.
        #[arg(long, value_name = "DIR")]
        fixtures: Option<PathBuf>,
    },
    /// Recent runs, staged record counts, rejected records.
    Status {
        /// Print the status as JSON.
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

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Stage every *.json page below DIR, in path order, instead of calling the Web API.
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// The pulled entity sets are complete snapshots: staged records missing from them are deleted.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Subcommand)]
pub enum SimTarget {
    /// The Marketo REST API simulator.
    Marketo,
    /// The Dataverse Web API simulator.
    Dynamics,
}
