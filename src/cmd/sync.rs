//! `oppsync sync [--fixtures DIR] [--full] [--dry-run]`: pull (from a fixture folder or the
//! live Web API), then push. The Marketo settings are checked before anything is pulled. With
//! `--dry-run` the pull stages as usual and push only shows what it would send.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::export::client::MarketoClient;
use crate::plan;

pub(crate) fn run(
    ctx: &mut Context,
    fixtures: Option<&Path>,
    full: bool,
    dry_run: bool,
) -> Result<Outcome> {
    let mut client = if dry_run {
        None
    } else {
        Some(MarketoClient::new(&ctx.config.marketo)?)
    };
    let pulled = match fixtures {
        Some(dir) => super::pull::run(ctx, dir, full)?,
        None => super::pull::run_live(ctx, full)?,
    };
    let pull_counts = std::mem::take(&mut ctx.counts);
    let plan = plan::load(&ctx.conn, &ctx.config)?;
    let pushed = match &mut client {
        Some(client) => super::push::send(ctx, &plan, client)?,
        None => {
            super::push::print_dry_run(&plan);
            Outcome::Done
        }
    };
    ctx.counts = json!({"pull": pull_counts, "push": std::mem::take(&mut ctx.counts)});
    Ok(if pulled == Outcome::Done && pushed == Outcome::Done {
        Outcome::Done
    } else {
        Outcome::DoneWithRejects
    })
}
