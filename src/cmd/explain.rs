//! `oppsync explain OPPORTUNITY_ID [--json]`: prints `explain::Explanation`.

use anyhow::Result;

use super::Context;
use crate::exit::Outcome;
use crate::explain::{self, Explanation};

pub(crate) fn run(ctx: &mut Context, opportunity_id: &str, json: bool) -> Result<Outcome> {
    let explanation = explain::explain(&ctx.conn, opportunity_id)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print_human(&explanation);
    }
    Ok(Outcome::Done)
}

fn or_none(value: Option<&str>) -> &str {
    value.unwrap_or("(none)")
}

fn print_human(e: &Explanation) {
    let s = &e.staged;
    outln!(
        "opportunity {} \"{}\"",
        e.opportunityid,
        or_none(s.name.as_deref())
    );
    outln!("  staged from {} (run {})", s.source_file, s.staged_run);
    outln!(
        "  customerid {} ({}), parentaccountid {}, parentcontactid {}",
        or_none(s.customerid.as_deref()),
        s.customerid_type
            .as_deref()
            .map_or("no annotation".to_string(), |t| format!("annotated {t}")),
        or_none(s.parentaccountid.as_deref()),
        or_none(s.parentcontactid.as_deref())
    );
    if let Some(reason) = &e.out_of_views {
        outln!("  not synced: {reason}");
        print_last_push(e);
        return;
    }
    print_owner("owner", &e.owner);
    if let Some(c) = &e.customer {
        outln!(
            "customer: {} {} - {}",
            or_none(c.customer_type.as_deref()),
            or_none(c.customer_id.as_deref()),
            explain::describe_resolution(&c.resolved_by)
        );
    }
    if let Some(a) = &e.account {
        let state = a
            .account_state
            .as_deref()
            .map(|st| format!(", account {st}"))
            .unwrap_or_default();
        let name = a
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        outln!(
            "account: {}{name} (rule {}{state})",
            or_none(a.accountid.as_deref()),
            a.rule
        );
        if let Some(owner) = &a.owner {
            print_owner("  account owner", owner);
        }
    }
    if e.roles.is_empty() {
        outln!("roles: none");
    }
    for r in &e.roles {
        outln!(
            "role: {} for contact {} {} <{}>{} (rule {}, from {})",
            or_none(r.role.as_deref()),
            r.contactid,
            or_none(r.contact_name.as_deref()),
            or_none(r.email.as_deref()),
            if r.is_primary { ", primary" } else { "" },
            r.rule,
            r.source_id
        );
        if let Some(owner) = &r.owner {
            print_owner("  contact owner", owner);
        }
    }
    for l in &e.left_out {
        outln!(
            "left out: {} {} role {} from {}: {}",
            l.rule,
            or_none(l.contactid.as_deref()),
            or_none(l.role.as_deref()),
            l.source_id,
            l.reason
        );
    }
    print_last_push(e);
}

fn print_owner(label: &str, owner: &explain::Owner) {
    let who = match (&owner.owner_name, &owner.ownerid) {
        (Some(name), Some(id)) => format!("{name} ({} {id})", or_none(owner.owner_type.as_deref())),
        (None, Some(id)) => format!("{id} ({})", or_none(owner.owner_type.as_deref())),
        _ => "(none)".to_string(),
    };
    let sent = owner
        .sales_person_id
        .as_deref()
        .map_or("none".to_string(), |id| id.to_string());
    outln!(
        "{label}: {who} -> externalSalesPersonId {sent}: {}",
        explain::describe_owner_rule(&owner.rule)
    );
}

fn print_last_push(e: &Explanation) {
    if e.last_push.is_empty() {
        outln!("last push: none recorded");
    }
    for p in &e.last_push {
        let reasons = p
            .reasons
            .as_deref()
            .filter(|r| *r != "null")
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        outln!(
            "last push: {} {} {} -> {}{} (run {}, {})",
            p.object,
            p.key,
            p.action,
            p.status,
            reasons,
            p.run_id,
            p.at
        );
    }
}
