//! The `oppsync` binary: parse the command line, run the command, print the error chain on one
//! line and map the outcome to the exit codes of PRODUCT.md section 4.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = oppsync::cli::Cli::parse();
    match oppsync::cmd::run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            // A closed stderr must not turn the failure into a panic: the exit code says it.
            let line = oppsync::exit::error_line(&err);
            let _ = writeln!(std::io::stderr().lock(), "error: {line}");
            ExitCode::from(oppsync::exit::code_for(&err))
        }
    }
}
