//! The `oppsync` binary: parse the command line, run the command, print the error chain on one
//! line and map the outcome to the exit codes of PRODUCT.md section 4.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = oppsync::cli::Cli::parse();
    match oppsync::cmd::run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            eprintln!("error: {}", oppsync::exit::error_line(&err));
            ExitCode::from(oppsync::exit::code_for(&err))
        }
    }
}
