//! `oppsync check`: the counterpart of Marketo's "Validate Sync Setup" checklist. Every item
//! asks the real services (or the simulators) one small question and says what to fix:
//! settings, Entra ID token, Dataverse `WhoAmI`, each table with every column oppsync selects,
//! change tracking per table, `new_synctomkto`, Marketo identity, native CRM sync (1018), the
//! describe of each object against the fields oppsync sends, and today's API usage against what
//! the current plan needs. Nothing is written, and nothing is sent to Marketo but reads.

use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::export::client::MarketoClient;
use crate::source::webapi::{Rejected, WebApi};
use crate::stage;

/// Marketo's daily quota on most subscriptions; the real one may be higher by contract.
const DAILY_QUOTA: i64 = 50_000;

/// One line of the checklist.
#[derive(Debug, Serialize)]
pub(crate) struct Item {
    pub name: String,
    /// `pass`, `warn` (works, but not as well as it could) or `fail`.
    pub verdict: &'static str,
    pub detail: String,
    pub fix: Option<String>,
    /// A failure of the setup (bad credentials, a missing column or field, native sync: exit 2)
    /// rather than of a service (unreachable: exit 1).
    #[serde(skip)]
    pub setup: bool,
}

impl Item {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Item {
        Item {
            name: name.into(),
            verdict: "pass",
            detail: detail.into(),
            fix: None,
            setup: false,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Item {
        Item {
            name: name.into(),
            verdict: "warn",
            detail: detail.into(),
            fix: Some(fix.into()),
            setup: false,
        }
    }

    /// A failure; a usage error (bad settings or credentials, refused setup) is a setup one.
    fn fail(name: impl Into<String>, err: &anyhow::Error, fix: impl Into<String>) -> Item {
        Item {
            name: name.into(),
            verdict: "fail",
            detail: crate::exit::error_line(err),
            fix: Some(fix.into()),
            setup: crate::exit::is_usage(err)
                || err.chain().any(|c| c.is::<Rejected>())
                || format!("{err:#}").contains("403"),
        }
    }
}

/// Runs every item; `conn` is the database (`None` when there is none yet).
pub(crate) fn run(config: &Config, conn: Option<&mut Connection>) -> Vec<Item> {
    let mut items = vec![Item::pass(
        "settings",
        "oppsync.toml and the environment parse and are within their bounds",
    )];
    dynamics(config, &mut items);
    marketo(config, conn, &mut items);
    items
}

fn dynamics(config: &Config, items: &mut Vec<Item>) {
    if config.dynamics.url.as_deref().is_none_or(str::is_empty) {
        items.push(Item::warn(
            "Dynamics",
            "dynamics.url is not set: only pull --fixtures works",
            "set dynamics.url (DYNAMICS_URL) and the Entra ID settings",
        ));
        return;
    }
    let mut api = match WebApi::new(&config.dynamics) {
        Ok(api) => api,
        Err(err) => {
            items.push(Item::fail(
                "Dynamics settings",
                &err,
                "set what the message names",
            ));
            return;
        }
    };
    match api.token() {
        Ok(()) => items.push(Item::pass("Entra ID token", "the app got an access token")),
        Err(err) => {
            items.push(Item::fail(
                "Entra ID token",
                &err,
                "check dynamics.client_id, the secret (or username and password) and the tenant",
            ));
            return;
        }
    }
    match api.probe("WhoAmI", "WhoAmI", false) {
        Ok((text, _)) => {
            let user = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["UserId"].as_str().map(str::to_string))
                .unwrap_or_else(|| "(no UserId in the answer)".into());
            items.push(Item::pass(
                "Dataverse WhoAmI",
                format!("the app is user {user}"),
            ));
        }
        Err(err) => {
            items.push(Item::fail(
                "Dataverse WhoAmI",
                &err,
                "make the app an application user of the org with a security role",
            ));
            return;
        }
    }
    for &set in stage::LIVE_ORDER {
        let Some(spec) = stage::spec_for(set) else {
            continue;
        };
        let mut columns = spec.select_columns_mapped(&config.mapping);
        let query = |columns: &[&str]| format!("{set}?$select={}&$top=1", columns.join(","));
        let mut readable = api.probe(set, &query(&columns), false);
        if let Err(err) = &readable
            && err
                .downcast_ref::<Rejected>()
                .is_some_and(|r| r.message.contains("new_synctomkto"))
        {
            columns.retain(|c| *c != "new_synctomkto");
            readable = api.probe(set, &query(&columns), false);
            if readable.is_ok() {
                items.push(Item::warn(
                    format!("{set}: new_synctomkto"),
                    "the org has no new_synctomkto column: every record is in scope",
                    "add the two-option column new_synctomkto to filter what is synced (optional)",
                ));
            }
        }
        match readable {
            Ok(_) => items.push(Item::pass(
                format!("{set}: readable"),
                format!("every column oppsync selects ({}) is there", columns.len()),
            )),
            Err(err) => {
                items.push(Item::fail(
                    format!("{set}: readable"),
                    &err,
                    format!("give the app read access to {set}, or remove the mapping of a column the org lacks"),
                ));
                continue;
            }
        }
        match api.probe(set, &format!("{set}?$select={}", spec.key), true) {
            Ok((_, true)) => items.push(Item::pass(
                format!("{set}: change tracking"),
                "on: pulls read only what changed",
            )),
            Ok((_, false)) | Err(_) => items.push(Item::warn(
                format!("{set}: change tracking"),
                "off: pulls ask by modifiedon, and deletes in Dynamics need `pull --full`",
                format!("turn on Track changes for the {set} table in Power Apps"),
            )),
        }
    }
}

/// Whether Marketo still holds a sample of the leads, opportunities, companies and roles it
/// acknowledged (one query call each): one deleted or merged there since is sent again only
/// after a change, or by `oppsync recheck` (`--roles` for a role lost on its own). Nothing when
/// nothing was acknowledged yet.
fn acknowledged_in_marketo(conn: &Connection, client: &MarketoClient) -> Option<Item> {
    const NAME: &str = "Marketo holds what it acknowledged";
    // `check` records no run: the calls are not logged.
    let sampled = match crate::export::recheck::sample(conn, client, &mut Vec::new()) {
        Ok(sampled) if sampled.is_empty() => return None,
        Ok(sampled) => sampled,
        Err(err) => {
            return Some(Item::warn(
                NAME,
                format!(
                    "the sample could not be looked up: {}",
                    crate::exit::error_line(&err)
                ),
                "give the API user the Read-Only Lead, Read-Only Company and Read-Only Opportunity permissions (its role in Admin > Users & Roles), so that this check and `oppsync recheck` work",
            ));
        }
    };
    let told: Vec<String> = sampled
        .iter()
        .map(|s| match s.missing {
            0 => format!("all {} {} sampled", s.asked, s.object.plural()),
            n => format!("{n} of {} {} sampled are not", s.asked, s.object.plural()),
        })
        .collect();
    let detail = format!("{} in Marketo", told.join(", "));
    let more_than_roles_missing = crate::export::recheck::more_than_roles_missing(&sampled);
    Some(if sampled.iter().any(|s| s.missing > 0) {
        Item::warn(
            NAME,
            format!("{detail}: deleted or merged there since"),
            if more_than_roles_missing {
                "run `oppsync recheck` (a query call per 300 leads or companies and per 150 opportunities), then push: they go again, leads and opportunities with their roles, companies with the leads and opportunities naming them"
            } else {
                "run `oppsync recheck --roles` (a query call per 300 leads or companies and per 150 opportunities or roles), then push: the roles go again"
            },
        )
    } else {
        Item::pass(NAME, detail)
    })
}

fn marketo(config: &Config, conn: Option<&mut Connection>, items: &mut Vec<Item>) {
    if config.marketo.base_url.as_deref().is_none_or(str::is_empty) {
        items.push(Item::warn(
            "Marketo",
            "marketo.base_url is not set: push does not work",
            "set marketo.base_url (MARKETO_BASE_URL), client_id and client_secret",
        ));
        return;
    }
    let client = match MarketoClient::new(&config.marketo) {
        Ok(client) => client,
        Err(err) => {
            items.push(Item::fail(
                "Marketo settings",
                &err,
                "set what the message names",
            ));
            return;
        }
    };
    let usage = client.get("/v1/stats/usage.json").result;
    let used = match &usage {
        Ok(answer) => {
            items.push(Item::pass(
                "Marketo identity",
                "the API user got an access token",
            ));
            answer["result"][0]["total"].as_i64().unwrap_or(0)
        }
        Err(err) => {
            items.push(Item::fail(
                "Marketo identity",
                err,
                "check marketo.client_id and client_secret (Admin > LaunchPoint > View Details)",
            ));
            return;
        }
    };
    match client.get("/v1/opportunities/roles/describe.json").result {
        Ok(_) => items.push(Item::pass(
            "Marketo native CRM sync",
            "off: the opportunity APIs answer",
        )),
        Err(err) => items.push(Item::fail(
            "Marketo native CRM sync",
            &err,
            "point marketo.base_url at an instance without Marketo's own Dynamics sync",
        )),
    }
    let Some(conn) = conn else {
        items.push(Item::warn(
            "Marketo fields",
            "no database yet: nothing to compare with the describes",
            "run `oppsync pull`, then check again",
        ));
        return;
    };
    let plan = match crate::plan::load(conn, config) {
        Ok(plan) => plan,
        Err(err) => {
            items.push(Item::fail("plan", &err, "see the message"));
            return;
        }
    };
    let mut calls = Vec::new();
    // Described afresh, whatever push stored: this is the check of the instance as it is now.
    match super::export::describe::check(&client, &plan, &config.mapping, None, 1, &mut calls) {
        Ok(_) => items.push(Item::pass(
            "Marketo fields",
            "every field oppsync would send exists and is updateable",
        )),
        Err(err) => items.push(Item::fail(
            "Marketo fields",
            &err,
            "add the field in Marketo, or change the mapping",
        )),
    }
    items.extend(acknowledged_in_marketo(conn, &client));
    let needed = plan.calls().values().sum::<usize>() as i64;
    let detail =
        format!("{used} calls used today of about {DAILY_QUOTA}; the current plan needs {needed}");
    if used + needed > DAILY_QUOTA {
        items.push(Item::warn(
            "Marketo API usage",
            detail,
            "push in the morning (the quota resets at midnight US Central), or ask Adobe for more",
        ));
    } else {
        items.push(Item::pass("Marketo API usage", detail));
    }
}
