//! `oppsync sync [--fixtures DIR]`: pull (from a fixture folder or the live Web API), then push.
//! The Marketo settings are checked before anything is pulled.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::export::client::MarketoClient;
use crate::plan;

pub(crate) fn run(ctx: &mut Context, fixtures: Option<&Path>) -> Result<Outcome> {
    let mut client = MarketoClient::new(&ctx.config.marketo)?;
    let pulled = match fixtures {
        Some(dir) => super::pull::run(ctx, dir, false)?,
        None => super::pull::run_live(ctx, false)?,
    };
    let pull_counts = std::mem::take(&mut ctx.counts);
    let plan = plan::load(&ctx.conn, &ctx.config)?;
    let pushed = super::push::send(ctx, &plan, &mut client)?;
    ctx.counts = json!({"pull": pull_counts, "push": std::mem::take(&mut ctx.counts)});
    Ok(if pulled == Outcome::Done && pushed == Outcome::Done {
        Outcome::Done
    } else {
        Outcome::DoneWithRejects
    })
}
