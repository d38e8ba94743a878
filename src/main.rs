//! The `oppsync` binary: parse the command line, run the command, print the error chain on one
//! line and map the outcome to the exit codes of PRODUCT.md section 4.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = oppsync::cli::Cli::parse();
    match oppsync::cmd::run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            // A closed stderr does not turn the failure into a panic: the exit code says it.
            oppsync::exit::print_error(&err);
            ExitCode::from(oppsync::exit::code_for(&err))
        }
    }
}
