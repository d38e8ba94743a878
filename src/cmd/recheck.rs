//! `oppsync recheck`: ask Marketo whether it still holds what it acknowledged, and set back what
//! it lacks so that the next push sends it again (`export::recheck`).

use anyhow::Result;
use serde_json::json;

use super::Context;
use crate::exit::Outcome;
use crate::export::recheck;
use crate::object::Object;

/// With `roles`, the acknowledged roles are asked about too.
pub(crate) fn run(ctx: &mut Context, roles: bool) -> Result<Outcome> {
    let client = super::marketo_client(ctx)?;
    let say = |line: String| crate::progress::say(&line);
    let in_flight = ctx.config.marketo.max_in_flight as usize;
    let rechecked = recheck::recheck(&mut ctx.conn, ctx.run_id, &client, in_flight, roles, &say)?;
    let missing: usize = rechecked.missing.values().sum();
    ctx.counts = json!(rechecked);
    if missing == 0 {
        ctx.say(if roles {
            "Marketo holds every company, lead, opportunity and role it acknowledged"
        } else {
            "Marketo holds every company, lead and opportunity it acknowledged"
        });
    } else {
        // A lead or opportunity sent again gets a new id, so push sends its roles too (a
        // company's leads and opportunities keep theirs).
        let lost_owners: usize = [Object::Lead, Object::Opportunity]
            .iter()
            .filter_map(|object| rechecked.missing.get(object.name()))
            .sum();
        ctx.say(format!(
            "{missing} no longer in Marketo: `oppsync push` sends them again{}",
            if lost_owners > 0 {
                ", and the roles of the leads and opportunities after them"
            } else {
                ""
            }
        ));
    }
    Ok(Outcome::Done)
}
