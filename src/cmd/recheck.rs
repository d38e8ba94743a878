//! `oppsync recheck`: ask Marketo whether it still holds what it acknowledged, and set back what
//! it lacks so that the next push sends it again (`export::recheck`).

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::export::recheck;

pub(crate) fn run(ctx: &mut Context) -> Result<Outcome> {
    let client = super::marketo_client(ctx)?;
    let say = |line: String| crate::progress::say(&line);
    let in_flight = ctx.config.marketo.max_in_flight as usize;
    let rechecked = recheck::recheck(&mut ctx.conn, ctx.run_id, &client, in_flight, &say)?;
    let missing: usize = rechecked.missing.values().sum();
    ctx.counts = json!(rechecked);
    if missing == 0 {
        ctx.say("Marketo holds every lead and opportunity it acknowledged");
    } else {
        ctx.say(format!(
            "{missing} no longer in Marketo: `oppsync push` sends them again, and their roles after them"
        ));
    }
    Ok(Outcome::Done)
}
