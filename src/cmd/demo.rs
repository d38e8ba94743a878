//! `oppsync demo`: the whole pipeline on the bundled demo org against the built-in Marketo
//! simulator: a full pull, plan, push; a delta pull, plan, push; a last push that finds nothing
//! to send. Ends with the counts Marketo holds and the sqlite3 queries that audit them.

use anyhow::Result;

use super::Context;
use super::pull::{self, PageText};
use crate::demo::{CHANGES, INITIAL};
use crate::exit::Outcome;
use crate::sim::marketo::{MarketoSim, SimConfig};

pub(crate) fn run(ctx: &mut Context) -> Result<Outcome> {
    let sim_config = SimConfig::default();
    let sim = MarketoSim::start(0, sim_config.clone())?;
    ctx.config.marketo.base_url = Some(sim.url());
    ctx.config.marketo.client_id = Some(sim_config.client_id.clone());
    ctx.config.marketo.client_secret =
        Some(crate::config::Secret::new(sim_config.client_secret.clone()));
    let db = ctx.conn.path().unwrap_or("oppsync-demo.db").to_string();

    ctx.say(format!(
        "== 1. pull: the demo org's first full snapshot ({} pages)",
        INITIAL.len()
    ));
    pull::stage_pages(ctx, pages(INITIAL), true)?;
    sync_round(ctx, &sim, 2)?;

    ctx.say(format!(
        "\n== 4. pull: the demo org's changes, as change-tracking delta pages ({} pages)",
        CHANGES.len()
    ));
    pull::stage_pages(ctx, pages(CHANGES), false)?;
    sync_round(ctx, &sim, 5)?;

    ctx.say("\n== 7. push again: nothing changed since");
    super::push::run(ctx, false)?;

    let state = sim.state();
    let count = |name: &str| {
        state
            .get(name)
            .and_then(|v| v.as_array())
            .map_or(0, Vec::len)
    };
    ctx.say(format!(
        "\nThe Marketo simulator now holds {} sales persons, {} companies, {} leads, {} opportunities and {} opportunity roles \
         ({} REST calls in all).",
        count("sales_persons"),
        count("companies"),
        count("leads"),
        count("opportunities"),
        count("roles"),
        state.get("rest_calls").and_then(|v| v.as_u64()).unwrap_or(0)
    ));
    ctx.say(format!(
        "\nAudit it with sqlite3:\n\
         \x20 sqlite3 -header -column {db} 'select opportunityid, accountid, rule from opportunity_account'\n\
         \x20 sqlite3 -header -column {db} 'select opportunityid, contactid, role, rule, source_id from opportunity_contact_role'\n\
         \x20 sqlite3 -header -column {db} 'select opportunityid, contactid, role, left_out_reason from opportunity_role_candidate where left_out_reason is not null'\n\
         \x20 sqlite3 -header -column {db} 'select owner_name, owner_type, sales_person_id, rule from owner_sales_person'\n\
         \x20 sqlite3 -header -column {db} \"select o.name, o.estimatedvalue, o.estimatedvalue_base, json_extract(m.payload, '$.amount') as amount_sent from opportunity o join mkto_opportunity m on m.key = o.opportunityid\"\n\
         \x20 sqlite3 -header -column {db} 'select run_id, object, key, action, status, reasons from push_outcome order by outcome_id'\n\
         \x20 sqlite3 -header -column {db} 'select run_id, method, path, records, http_status, error_code from api_call'\n\
         \x20 sqlite3 -header -column {db} 'select run_id, command, outcome, counts from run'\n\
         and explain one opportunity: oppsync --db {db} explain a7d3c2b1-2c44-ef11-a316-000d3a5c0003"
    ));
    Ok(Outcome::Done)
}

/// Plan and push, numbered from `step`.
fn sync_round(ctx: &mut Context, sim: &MarketoSim, step: usize) -> Result<()> {
    ctx.say(format!(
        "\n== {step}. plan: the rule views against what Marketo acknowledged"
    ));
    let mut plan = super::load_plan(ctx)?;
    if ctx.verbosity >= crate::progress::Level::Normal {
        super::plan::print_human(&plan);
        super::plan::print_skipped(&ctx.conn, &plan)?;
    }
    ctx.say(format!(
        "\n== {}. push to the Marketo simulator at {}",
        step + 1,
        sim.url()
    ));
    let mut client = super::marketo_client(ctx)?;
    super::push::send(ctx, &mut plan, &mut client)?;
    Ok(())
}

fn pages(
    bundled: &'static [(&'static str, &'static str)],
) -> impl Iterator<Item = Result<PageText>> {
    bundled.iter().map(|(path, text)| {
        Ok(PageText {
            source: format!("demo:{path}"),
            name: path.rsplit('/').next().map(str::to_string),
            text: (*text).to_string(),
        })
    })
}
