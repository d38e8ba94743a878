//! oppsync keeps Marketo Engage opportunities in step with Dynamics 365, one way and auditably.
//!
//! The pipeline is visible in the module list: `source` reads Web API pages (fixture folders
//! today), `stage` writes them into SQLite, `rules` installs the SQL views that apply Marketo's
//! association rules, and `explain` / `status` read the result back. `cmd` holds one file of
//! glue per subcommand; `db` and `sql` own the database file and the embedded SQL.

/// `println!` for what a command shows on stdout (`progress::write_stdout`): once stdout is
/// closed (`oppsync status | head -1`), the rest is dropped, where `println!` would panic in
/// the middle of the command.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::progress::write_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` likewise, for warnings (`progress::write_stderr`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::progress::write_stderr(format_args!($($arg)*))
    };
}

pub(crate) mod check;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod db;
pub(crate) mod demo;
pub mod exit;
pub(crate) mod explain;
pub(crate) mod export;
pub(crate) mod export_rows;
pub(crate) mod net;
pub(crate) mod object;
pub(crate) mod plan;
pub(crate) mod problem;
pub(crate) mod progress;
pub(crate) mod redact;
pub(crate) mod rules;
pub(crate) mod run;
pub mod sim;
pub(crate) mod source;
pub(crate) mod sql;
pub(crate) mod stage;
pub(crate) mod status;
pub(crate) mod stop;
