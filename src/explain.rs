//! Why an opportunity got the account and contact roles it got: the staged record, the rule
//! views' rows for it, and every candidate contact that was left out with its reason.
//!
//! Reads only; the answers come from the same views push will read, never from a second copy of
//! the rules.

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::object::Object;

/// Everything `explain` reports about one opportunity. Serialized as the `--json` contract.
#[derive(Debug, Serialize)]
pub(crate) struct Explanation {
    pub opportunityid: String,
    pub staged: Staged,
    /// Why the opportunity is not in the rule views, or `None` when it is.
    pub out_of_views: Option<String>,
    pub customer: Option<Customer>,
    /// Who owns the opportunity, and the sales person sent for them.
    pub owner: Owner,
    pub account: Option<Account>,
    pub roles: Vec<Role>,
    pub left_out: Vec<LeftOut>,
    /// The last push outcome of the opportunity, its company and its roles.
    pub last_push: Vec<PushOutcome>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PushOutcome {
    pub object: String,
    pub key: String,
    pub action: String,
    pub status: String,
    pub marketo_id: Option<String>,
    pub reasons: Option<String>,
    pub run_id: i64,
    pub at: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Staged {
    pub name: Option<String>,
    pub statecode: Option<i64>,
    pub new_synctomkto: Option<bool>,
    pub customerid: Option<String>,
    pub customerid_type: Option<String>,
    pub parentaccountid: Option<String>,
    pub parentcontactid: Option<String>,
    pub source_file: String,
    pub staged_run: i64,
    pub deleted_run: Option<i64>,
    pub deleted_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Customer {
    pub customer_type: Option<String>,
    pub customer_id: Option<String>,
    pub resolved_by: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Account {
    pub accountid: Option<String>,
    pub rule: String,
    pub name: Option<String>,
    /// `staged`, `not staged`, `deleted` or `filtered out`; only a staged account becomes a company.
    pub account_state: Option<String>,
    pub owner: Option<Owner>,
}

/// A record's owner and the Marketo sales person that stands for it (`owner_sales_person`).
#[derive(Debug, Serialize)]
pub(crate) struct Owner {
    pub ownerid: Option<String>,
    /// `systemuser` or `team`, from the lookup's annotation.
    pub owner_type: Option<String>,
    pub owner_name: Option<String>,
    /// The externalSalesPersonId sent; `None` for a team, an unknown user or no owner.
    pub sales_person_id: Option<String>,
    /// `systemuser`, `team`, `user_not_staged` or `no_owner`.
    pub rule: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Role {
    pub contactid: String,
    pub contact_name: Option<String>,
    pub email: Option<String>,
    pub role: Option<String>,
    pub is_primary: bool,
    pub rule: String,
    pub source_id: String,
    pub owner: Option<Owner>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeftOut {
    pub contactid: Option<String>,
    pub role: Option<String>,
    pub rule: String,
    pub source_id: String,
    pub reason: String,
}

/// Builds the explanation, or fails when the opportunity was never staged. The id is read as
/// staging reads keys (any case, braces allowed); one that is not a GUID is a usage error.
pub(crate) fn explain(conn: &Connection, opportunity_id: &str) -> Result<Explanation> {
    let Some(id) = crate::stage::guid(opportunity_id.trim()) else {
        return Err(crate::exit::usage(format!(
            "{opportunity_id:?} is not an opportunity id: Dynamics ids are GUIDs, such as a7d3c2b1-2c44-ef11-a316-000d3a5c0001 (see `oppsync status`)"
        )));
    };
    let staged = conn
        .query_row(
            "SELECT name, statecode, new_synctomkto, customerid, customerid_type, parentaccountid,
                    parentcontactid, source_file, staged_run, deleted_run, deleted_reason
             FROM opportunity WHERE opportunityid = ?1",
            params![id],
            |r| {
                Ok(Staged {
                    name: r.get(0)?,
                    statecode: r.get(1)?,
                    new_synctomkto: r.get::<_, Option<i64>>(2)?.map(|v| v != 0),
                    customerid: r.get(3)?,
                    customerid_type: r.get(4)?,
                    parentaccountid: r.get(5)?,
                    parentcontactid: r.get(6)?,
                    source_file: r.get(7)?,
                    staged_run: r.get(8)?,
                    deleted_run: r.get(9)?,
                    deleted_reason: r.get(10)?,
                })
            },
        )
        .optional()?;
    let Some(staged) = staged else {
        bail!("opportunity {id} is not staged; pull it first (see `oppsync status`)");
    };
    let out_of_views = match (&staged.deleted_run, staged.new_synctomkto) {
        (Some(run), _) => Some(format!(
            "deleted in Dynamics ({}, seen by run {run})",
            staged.deleted_reason.as_deref().unwrap_or("deleted")
        )),
        (None, Some(false)) => Some("filtered out: new_synctomkto is false".to_string()),
        _ => None,
    };
    let opportunity_owner =
        owner(conn, "opportunity", "opportunityid", &id)?.unwrap_or_else(no_owner);
    let mut explanation = Explanation {
        opportunityid: id.clone(),
        staged,
        out_of_views,
        customer: None,
        owner: opportunity_owner,
        account: None,
        roles: Vec::new(),
        left_out: Vec::new(),
        last_push: Vec::new(),
    };
    explanation.last_push = last_push(conn, &id)?;
    if explanation.out_of_views.is_some() {
        return Ok(explanation);
    }
    explanation.customer = conn
        .query_row(
            "SELECT customer_type, customer_id, resolved_by FROM opportunity_customer WHERE opportunityid = ?1",
            params![id],
            |r| Ok(Customer { customer_type: r.get(0)?, customer_id: r.get(1)?, resolved_by: r.get(2)? }),
        )
        .optional()?;
    explanation.account = conn
        .query_row(
            "SELECT oa.accountid, oa.rule, a.name,
                    CASE WHEN oa.accountid IS NULL THEN NULL
                         WHEN a.accountid IS NULL THEN 'not staged'
                         WHEN a.deleted_run IS NOT NULL THEN 'deleted'
                         WHEN a.new_synctomkto = 0 THEN 'filtered out'
                         ELSE 'staged' END
             FROM opportunity_account oa LEFT JOIN account a ON a.accountid = oa.accountid
             WHERE oa.opportunityid = ?1",
            params![id],
            |r| {
                Ok(Account {
                    accountid: r.get(0)?,
                    rule: r.get(1)?,
                    name: r.get(2)?,
                    account_state: r.get(3)?,
                    owner: None,
                })
            },
        )
        .optional()?;
    if let Some(account) = &mut explanation.account
        && let Some(accountid) = &account.accountid
    {
        account.owner = owner(conn, "account", "accountid", accountid)?;
    }
    let mut roles = conn.prepare(
        "SELECT r.contactid, c.fullname, c.emailaddress1, r.role, r.is_primary, r.rule, r.source_id
         FROM opportunity_contact_role r LEFT JOIN contact c ON c.contactid = r.contactid
         WHERE r.opportunityid = ?1 ORDER BY r.is_primary DESC, r.contactid, r.role",
    )?;
    explanation.roles = roles
        .query_map(params![id], |r| {
            Ok(Role {
                contactid: r.get(0)?,
                contact_name: r.get(1)?,
                email: r.get(2)?,
                role: r.get(3)?,
                is_primary: r.get::<_, i64>(4)? != 0,
                rule: r.get(5)?,
                source_id: r.get(6)?,
                owner: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for role in &mut explanation.roles {
        role.owner = owner(conn, "contact", "contactid", &role.contactid)?;
    }
    let mut left_out = conn.prepare(
        "SELECT contactid, role, rule, source_id, left_out_reason FROM opportunity_role_candidate
         WHERE opportunityid = ?1 AND left_out_reason IS NOT NULL ORDER BY rule, source_id",
    )?;
    explanation.left_out = left_out
        .query_map(params![id], |r| {
            Ok(LeftOut {
                contactid: r.get(0)?,
                role: r.get(1)?,
                rule: r.get(2)?,
                source_id: r.get(3)?,
                reason: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(explanation)
}

/// How `owner_sales_person` links one owner: its name, the sales person sent for it and the
/// rule. SQLite pushes the filter into each arm of the view's UNION of owners, so this reads
/// the three owner indexes at `ownerid` (a test holds the plan); reading the whole view took
/// 0.5 s at 1M opportunities, 1.8 s before migration 0018.
const OWNER_LINK: &str = "SELECT owner_name, sales_person_id, rule FROM owner_sales_person
     WHERE ownerid = ?1 AND owner_type IS ?2";

/// The owner of one staged record (`table` and `key` are this module's constants), as
/// `owner_sales_person` links it; `None` when the record is not staged.
fn owner(conn: &Connection, table: &str, key: &str, id: &str) -> Result<Option<Owner>> {
    let staged: Option<(Option<String>, Option<String>, Option<String>)> = conn
        .query_row(
            &format!(
                "SELECT ownerid, ownerid_type,
                        json_extract(raw, '$.\"_ownerid_value@OData.Community.Display.V1.FormattedValue\"')
                 FROM {table} WHERE {key} = ?1"
            ),
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((ownerid, owner_type, annotated_name)) = staged else {
        return Ok(None);
    };
    let linked: Option<(Option<String>, Option<String>, String)> = match &ownerid {
        Some(ownerid) => conn
            .prepare_cached(OWNER_LINK)?
            .query_row(params![ownerid, owner_type], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?,
        None => None,
    };
    let (owner_name, sales_person_id, rule) = linked.unwrap_or((None, None, "no_owner".into()));
    Ok(Some(Owner {
        ownerid,
        owner_type,
        owner_name: owner_name.or(annotated_name),
        sales_person_id,
        rule,
    }))
}

fn no_owner() -> Owner {
    Owner {
        ownerid: None,
        owner_type: None,
        owner_name: None,
        sales_person_id: None,
        rule: "no_owner".to_string(),
    }
}

/// What each `rule` value of `owner_sales_person` means, for people.
pub(crate) fn describe_owner_rule(rule: &str) -> &'static str {
    match rule {
        "systemuser" => "a staged system user: sent as its own sales person",
        "team" => "a team: Marketo has no team sales persons, so no owner is sent",
        "user_not_staged" => {
            "a user that is not staged (or was deleted): no owner is sent, never an id Marketo would refuse with 718"
        }
        _ => "no owner",
    }
}

/// The latest outcome per record for the opportunity, its roles and the company it points at.
fn last_push(conn: &Connection, id: &str) -> Result<Vec<PushOutcome>> {
    // A role's key is the JSON array of its opportunity's id, its lead's key and the role, so
    // the opportunity's roles are the keys from `["id",` up to `["id"-` (the character after
    // the comma): a range of the key index. `LIKE` with a built pattern walked every role's
    // outcome (1.5M after a first push at 1M opportunities) and took `_` and `%` in the id for
    // wildcards.
    let array = serde_json::to_string(&[id])?;
    let open = &array[..array.len() - 1];
    let (roles_from, roles_to) = (format!("{open},"), format!("{open}-"));
    let mut stmt = conn.prepare(
        "SELECT object, key, action, status, marketo_id, reasons, run_id, at FROM push_outcome p
         WHERE outcome_id = (SELECT max(outcome_id) FROM push_outcome q WHERE q.object = p.object AND q.key = p.key)
           AND ((object = ?2 AND key = ?1)
             OR (object = ?3 AND key >= ?5 AND key < ?6)
             OR (object = ?4 AND key = (SELECT accountid FROM opportunity_account WHERE opportunityid = ?1)))
         ORDER BY object, key",
    )?;
    let objects = [
        Object::Opportunity.name(),
        Object::OpportunityRole.name(),
        Object::Company.name(),
    ];
    let rows = stmt
        .query_map(
            params![id, objects[0], objects[1], objects[2], roles_from, roles_to],
            |r| {
                Ok(PushOutcome {
                    object: r.get(0)?,
                    key: r.get(1)?,
                    action: r.get(2)?,
                    status: r.get(3)?,
                    marketo_id: r.get(4)?,
                    reasons: r.get(5)?,
                    run_id: r.get(6)?,
                    at: r.get(7)?,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// What each `resolved_by` value of `opportunity_customer` means, for people.
pub(crate) fn describe_resolution(resolved_by: &str) -> &'static str {
    match resolved_by {
        "annotation" => "customerid, typed by its lookuplogicalname annotation",
        "staged_account" => "customerid, typed as an account because a staged account has that id",
        "staged_contact" => "customerid, typed as a contact because a staged contact has that id",
        "equals_parentaccountid" => {
            "customerid, typed as an account because it equals parentaccountid"
        }
        "equals_parentcontactid" => {
            "customerid, typed as a contact because it equals parentcontactid"
        }
        "fallback_parentaccountid" => {
            "customerid is empty; parentaccountid used (the account wins)"
        }
        "fallback_parentcontactid" => "customerid is empty; parentcontactid used",
        "no_customer" => "customerid, parentaccountid and parentcontactid are all empty",
        "unresolved" => {
            "customerid has no annotation and matches no staged record or parent field; its type is unknown"
        }
        _ => "unknown resolution",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose `push_outcome` holds, for each id in `ids`, an opportunity created and
    /// two roles created, then one of them deleted.
    fn pushed(ids: &[String]) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        let config = crate::config::Config::default();
        crate::rules::install(&mut conn, &config.rules, &config.export).unwrap();
        conn.execute(
            "INSERT INTO run (run_id, command, args, started_at, outcome)
             VALUES (1, 'push', '[]', '2001-01-01T00:00:00Z', 'done')",
            [],
        )
        .unwrap();
        let mut insert = conn
            .prepare(
                "INSERT INTO push_outcome (run_id, object, key, action, status, at)
                 VALUES (1, ?1, ?2, ?3, ?4, '2001-01-01T00:00:00Z')",
            )
            .unwrap();
        for id in ids {
            insert
                .execute(params!["opportunity", id, "create", "created"])
                .unwrap();
            for (who, action, status) in [
                ("a@example.com", "create", "created"),
                ("b@example.com", "create", "created"),
                ("b@example.com", "delete", "deleted"),
            ] {
                let key = serde_json::json!([id, who, "Stakeholder"]).to_string();
                insert
                    .execute(params!["opportunity_role", key, action, status])
                    .unwrap();
            }
        }
        drop(insert);
        conn
    }

    fn outcomes(conn: &Connection, id: &str) -> Vec<(String, String, String)> {
        last_push(conn, id)
            .unwrap()
            .into_iter()
            .map(|p| (p.object, p.key, p.status))
            .collect()
    }

    #[test]
    fn an_owner_is_looked_up_at_its_id_in_the_three_owner_indexes() {
        let plan = crate::db::query_plan(&pushed(&[]), OWNER_LINK, params!["u1", "systemuser"]);
        for table in ["opportunity", "account", "contact"] {
            assert!(
                plan.contains(&format!(
                    "{table} USING COVERING INDEX {table}_by_owner (ownerid=?"
                )),
                "{table}:\n{plan}"
            );
        }
    }

    #[test]
    fn the_last_push_lists_the_opportunitys_own_roles_and_no_other() {
        let ids: Vec<String> = ["opp_1", "oppx1", "opp_10", "opp_"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let conn = pushed(&ids);
        let role = |who: &str| {
            let key = serde_json::json!(["opp_1", who, "Stakeholder"]).to_string();
            ("opportunity_role".to_string(), key)
        };
        let expected = [
            (("opportunity".to_string(), "opp_1".to_string()), "created"),
            (role("a@example.com"), "created"),
            (role("b@example.com"), "deleted"),
        ];
        let expected: Vec<(String, String, String)> = expected
            .into_iter()
            .map(|((object, key), status)| (object, key, status.to_string()))
            .collect();
        assert_eq!(outcomes(&conn, "opp_1"), expected);
        assert_eq!(outcomes(&conn, "opp%").len(), 0);
    }

    /// How many thousands of SQLite's steps `last_push` takes for one opportunity.
    fn last_push_steps(mut conn: Connection, id: &str) -> u64 {
        let (found, steps) = crate::db::steps_taken(&mut conn, |conn| last_push(conn, id).unwrap());
        assert_eq!(found.len(), 3);
        steps
    }

    #[test]
    fn the_last_push_reads_the_opportunitys_outcomes_alone() {
        let many: Vec<String> = (0..20_000).map(|i| format!("opp-{i:05}")).collect();
        let steps = last_push_steps(pushed(&many), "opp-12345");
        // With LIKE, 60,000 role outcomes took about 360 thousand steps.
        assert!(steps < 10, "{steps} thousand steps");
    }
}
