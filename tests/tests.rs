//! The integration tests: one binary that runs the real `oppsync` against fixture folders.
//!
//! - `scenarios`: every `fixtures/*/expected/` folder, data-driven (see that module).
//! - `cli`: behaviour that is about the command line rather than a data set: locking, usage
//!   errors, explain, status, reruns.
//! - `push`, `live`: push and live pull against the simulators.
//! - `security`: hostile servers and settings, scripted with `broken`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broken;
mod cli;
mod live;
mod push;
mod scenarios;
mod security;
mod util;
