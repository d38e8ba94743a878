//! One test per rule view, each inserting the fewest staged rows that show its rule.

use rusqlite::{Connection, params};

use super::install;
use crate::config::{ExportConfig, RulesConfig};

fn db() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::db::configure(&conn).unwrap();
    crate::db::migrate(&mut conn).unwrap();
    install(&mut conn, &RulesConfig::default(), &ExportConfig::default()).unwrap();
    conn.execute(
        "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'test', '[]', 'now')",
        [],
    )
    .unwrap();
    conn
}

fn opportunity(
    conn: &Connection,
    id: &str,
    customer: Option<&str>,
    kind: Option<&str>,
    account: Option<&str>,
    contact: Option<&str>,
) {
    conn.execute(
        "INSERT INTO opportunity (opportunityid, customerid, customerid_type, parentaccountid, parentcontactid,
                                  raw, source_file, staged_run, seen_run)
         VALUES (?1, ?2, ?3, ?4, ?5, '{}', 'test', 1, 1)",
        params![id, customer, kind, account, contact],
    )
    .unwrap();
}

fn account(conn: &Connection, id: &str) {
    conn.execute(
        "INSERT INTO account (accountid, raw, source_file, staged_run, seen_run) VALUES (?1, '{}', 'test', 1, 1)",
        params![id],
    )
    .unwrap();
}

fn contact(conn: &Connection, id: &str, parent: Option<&str>, parent_kind: Option<&str>) {
    conn.execute(
        "INSERT INTO contact (contactid, parentcustomerid, parentcustomerid_type, raw, source_file, staged_run, seen_run)
         VALUES (?1, ?2, ?3, '{}', 'test', 1, 1)",
        params![id, parent, parent_kind],
    )
    .unwrap();
}

/// A connection from `record1` (typed by objecttypecode) to `record2` with the contact-side role.
fn connection(
    conn: &Connection,
    id: &str,
    record1: (&str, i64, Option<&str>),
    record2: (&str, i64, Option<&str>),
    statecode: i64,
) {
    conn.execute(
        "INSERT INTO connection (connectionid, record1id, record1objecttypecode, record1roleid,
                                 record2id, record2objecttypecode, record2roleid, statecode,
                                 raw, source_file, staged_run, seen_run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '{}', 'test', 1, 1)",
        params![
            id, record1.0, record1.1, record1.2, record2.0, record2.1, record2.2, statecode
        ],
    )
    .unwrap();
}

fn role(conn: &Connection, id: &str, name: &str, category: i64, statecode: i64) {
    conn.execute(
        "INSERT INTO connectionrole (connectionroleid, name, category, statecode, raw, source_file, staged_run, seen_run)
         VALUES (?1, ?2, ?3, ?4, '{}', 'test', 1, 1)",
        params![id, name, category, statecode],
    )
    .unwrap();
}

fn rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        Ok((0..n)
            .map(|i| match row.get::<_, rusqlite::types::Value>(i).unwrap() {
                rusqlite::types::Value::Null => "NULL".to_string(),
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join(" "))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn opportunity_customer_types_the_customer_and_falls_back_to_the_account() {
    let conn = db();
    opportunity(&conn, "o1", Some("x"), Some("contact"), None, None);
    opportunity(&conn, "o2", None, None, Some("a"), Some("c"));
    opportunity(&conn, "o3", Some("p"), None, None, Some("p"));
    assert_eq!(
        rows(
            &conn,
            "SELECT opportunityid, customer_type, customer_id, resolved_by FROM opportunity_customer ORDER BY 1"
        ),
        [
            "o1 contact x annotation",
            "o2 account a fallback_parentaccountid",
            "o3 contact p equals_parentcontactid"
        ]
    );
}

#[test]
fn opportunity_customer_leaves_out_deleted_and_filtered_opportunities() {
    let conn = db();
    opportunity(&conn, "o1", Some("a"), Some("account"), None, None);
    opportunity(&conn, "o2", Some("a"), Some("account"), None, None);
    opportunity(&conn, "o3", Some("a"), Some("account"), None, None);
    conn.execute(
        "UPDATE opportunity SET deleted_run = 1 WHERE opportunityid = 'o2'",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE opportunity SET new_synctomkto = 0 WHERE opportunityid = 'o3'",
        [],
    )
    .unwrap();
    assert_eq!(
        rows(&conn, "SELECT opportunityid FROM opportunity_customer"),
        ["o1"]
    );
}

#[test]
fn contact_account_is_the_parent_only_when_it_is_an_account() {
    let conn = db();
    account(&conn, "a");
    contact(&conn, "c1", Some("a"), None);
    contact(&conn, "c2", Some("c1"), Some("contact"));
    contact(&conn, "c3", Some("unknown"), None);
    assert_eq!(
        rows(
            &conn,
            "SELECT contactid, accountid, resolved_by FROM contact_account ORDER BY 1"
        ),
        [
            "c1 a staged_account",
            "c2 NULL annotation",
            "c3 NULL unresolved"
        ]
    );
}

#[test]
fn opportunity_account_follows_the_customer_contact_to_its_account() {
    let conn = db();
    contact(&conn, "c1", Some("a"), Some("account"));
    contact(&conn, "c2", None, None);
    opportunity(&conn, "o1", Some("c1"), Some("contact"), None, None);
    opportunity(&conn, "o2", Some("c2"), Some("contact"), None, None);
    opportunity(&conn, "o3", Some("a"), Some("account"), None, Some("c1"));
    opportunity(&conn, "o4", None, None, None, None);
    assert_eq!(
        rows(
            &conn,
            "SELECT opportunityid, accountid, rule FROM opportunity_account ORDER BY 1"
        ),
        [
            "o1 a customer_contact_account",
            "o2 NULL customer_contact_no_account",
            "o3 a customer_account",
            "o4 NULL no_customer"
        ]
    );
}

#[test]
fn opportunity_connection_orients_each_row_from_the_opportunity_side() {
    let conn = db();
    connection(&conn, "k1", ("o", 3, None), ("c", 2, Some("r")), 0);
    connection(&conn, "k2", ("c", 2, Some("r")), ("o", 3, None), 0);
    assert_eq!(
        rows(
            &conn,
            "SELECT connectionid, opportunityid, other_id, other_kind, role_id FROM opportunity_connection ORDER BY 1"
        ),
        ["k1 o c contact r", "k2 o c contact r"]
    );
}

#[test]
fn opportunity_role_candidate_gives_a_reciprocal_pair_one_role_and_says_why_others_are_out() {
    let conn = db();
    opportunity(&conn, "o", Some("a"), Some("account"), None, None);
    contact(&conn, "c", None, None);
    role(&conn, "tech", "Technical Buyer", 1000, 0);
    role(&conn, "am", "Account Manager", 1001, 0);
    connection(&conn, "k1", ("o", 3, None), ("c", 2, Some("tech")), 0);
    connection(&conn, "k2", ("c", 2, Some("tech")), ("o", 3, None), 0);
    connection(&conn, "k3", ("o", 3, None), ("c", 2, Some("am")), 0);
    connection(&conn, "k4", ("o", 3, None), ("c", 2, None), 1);
    assert_eq!(
        rows(
            &conn,
            "SELECT source_id, role, left_out_reason FROM opportunity_role_candidate ORDER BY 1"
        ),
        [
            "k1 Technical Buyer NULL",
            "k2 Technical Buyer same role already derived from k1",
            "k3 Account Manager role not a stakeholder category (category 1001)",
            "k4 Stakeholder connection inactive"
        ]
    );
}

#[test]
fn opportunity_contact_role_holds_the_customer_and_stakeholder_roles() {
    let conn = db();
    opportunity(&conn, "o", Some("c"), Some("contact"), None, None);
    contact(&conn, "c", None, None);
    connection(&conn, "k", ("o", 3, None), ("c", 2, None), 0);
    assert_eq!(
        rows(
            &conn,
            "SELECT contactid, role, is_primary, rule, source_id FROM opportunity_contact_role ORDER BY 2"
        ),
        [
            "c Customer 1 customer_contact o",
            "c Stakeholder 0 stakeholder k"
        ]
    );
}

#[test]
fn rule_settings_rename_roles_and_widen_categories() {
    let mut conn = db();
    let rules = RulesConfig {
        customer_contact_role: "Buyer".into(),
        stakeholder_default_role: "Influencer".into(),
        stakeholder_categories: vec![1000, 1001],
    };
    install(&mut conn, &rules, &ExportConfig::default()).unwrap();
    opportunity(&conn, "o", Some("c"), Some("contact"), None, None);
    contact(&conn, "c", None, None);
    role(&conn, "am", "Account Manager", 1001, 0);
    connection(&conn, "k1", ("o", 3, None), ("c", 2, None), 0);
    connection(&conn, "k2", ("o", 3, None), ("c", 2, Some("am")), 0);
    assert_eq!(
        rows(
            &conn,
            "SELECT role FROM opportunity_contact_role ORDER BY 1"
        ),
        ["Account Manager", "Buyer", "Influencer"]
    );
}

#[test]
fn installing_twice_replaces_the_views_without_error() {
    let mut conn = db();
    install(&mut conn, &RulesConfig::default(), &ExportConfig::default()).unwrap();
    let views: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'view'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(views as usize, crate::sql::VIEWS.len());
}

fn user(conn: &Connection, id: &str, last: &str, disabled: bool) {
    conn.execute(
        "INSERT INTO systemuser (systemuserid, lastname, isdisabled, raw, source_file, staged_run, seen_run)
         VALUES (?1, ?2, ?3, '{}', 'test', 1, 1)",
        params![id, last, disabled],
    )
    .unwrap();
}

fn own(conn: &Connection, table: &str, id: &str, owner: &str, kind: Option<&str>) {
    let key = match table {
        "opportunity" => "opportunityid",
        "account" => "accountid",
        _ => "contactid",
    };
    conn.execute(
        &format!("UPDATE {table} SET ownerid = ?2, ownerid_type = ?3 WHERE {key} = ?1"),
        params![id, owner, kind],
    )
    .unwrap();
}

#[test]
fn owner_sales_person_links_staged_users_and_never_teams_or_strangers() {
    let conn = db();
    user(&conn, "u1", "Seller", false);
    user(&conn, "u2", "Gone", false);
    conn.execute(
        "UPDATE systemuser SET deleted_run = 1 WHERE systemuserid = 'u2'",
        [],
    )
    .unwrap();
    for (id, owner, kind) in [
        ("o1", "u1", Some("systemuser")),
        ("o2", "t1", Some("team")),
        ("o3", "u9", Some("systemuser")),
        ("o4", "u2", Some("systemuser")),
        ("o5", "u1", None),
    ] {
        opportunity(&conn, id, None, None, None, None);
        own(&conn, "opportunity", id, owner, kind);
    }
    assert_eq!(
        rows(
            &conn,
            "SELECT ownerid, coalesce(owner_type, '-'), coalesce(sales_person_id, '-'), rule FROM owner_sales_person ORDER BY 1, 2"
        ),
        [
            "t1 team - team",
            "u1 - u1 systemuser",
            "u1 systemuser u1 systemuser",
            "u2 systemuser - user_not_staged",
            "u9 systemuser - user_not_staged"
        ]
    );
}

#[test]
fn owner_sales_person_gathers_the_owners_from_the_owner_indexes_alone() {
    // Not from the staged rows, raw records and all: at 1M opportunities that read took a
    // full evaluation 1.9-2.0 s, 0.5-0.8 s since migration 0018.
    let plan = crate::db::query_plan(&db(), "SELECT * FROM owner_sales_person", []);
    for table in ["opportunity", "account", "contact"] {
        assert!(
            plan.contains(&format!("{table} USING COVERING INDEX {table}_by_owner")),
            "{table}:\n{plan}"
        );
    }
}

#[test]
fn sales_persons_are_the_owners_of_exported_records_only() {
    let conn = db();
    user(&conn, "u1", "Seller", false);
    user(&conn, "u2", "Rossi", true);
    user(&conn, "u3", "Idle", false);
    account(&conn, "a");
    own(&conn, "account", "a", "u2", Some("systemuser"));
    opportunity(&conn, "o", Some("a"), Some("account"), None, None);
    conn.execute(
        "UPDATE opportunity SET name = 'Deal' WHERE opportunityid = 'o'",
        [],
    )
    .unwrap();
    own(&conn, "opportunity", "o", "u1", Some("systemuser"));
    assert_eq!(
        rows(
            &conn,
            "SELECT key, json_extract(payload, '$.lastName') FROM mkto_sales_person ORDER BY 1"
        ),
        ["u1 Seller", "u2 Rossi"],
        "disabled users too; not the user who owns nothing"
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT json_extract(payload, '$.externalSalesPersonId') FROM mkto_opportunity"
        ),
        ["u1"]
    );
    assert_eq!(
        rows(
            &conn,
            "SELECT json_extract(payload, '$.externalSalesPersonId') FROM mkto_company"
        ),
        ["u2"]
    );
}

#[test]
fn amounts_come_from_the_base_currency_unless_told_otherwise() {
    let mut conn = db();
    account(&conn, "a");
    conn.execute(
        "UPDATE account SET revenue = 100.0, revenue_base = 108.0 WHERE accountid = 'a'",
        [],
    )
    .unwrap();
    opportunity(&conn, "o", Some("a"), Some("account"), None, None);
    conn.execute(
        "UPDATE opportunity SET name = 'Deal', statecode = 0, estimatedvalue = 90000.0,
                estimatedvalue_base = 97200.0 WHERE opportunityid = 'o'",
        [],
    )
    .unwrap();
    let amounts = |conn: &Connection| {
        rows(
            conn,
            "SELECT json_extract(o.payload, '$.amount') || ' ' || json_extract(c.payload, '$.annualRevenue')
             FROM mkto_opportunity o, mkto_company c",
        )
    };
    assert_eq!(amounts(&conn), ["97200.0 108.0"]);
    let export = ExportConfig {
        currency: crate::config::Currency::Transaction,
        ..ExportConfig::default()
    };
    install(&mut conn, &RulesConfig::default(), &export).unwrap();
    assert_eq!(amounts(&conn), ["90000.0 100.0"]);
}

#[test]
fn companies_are_the_accounts_of_leads_with_an_email_role_holders_or_all_in_scope() {
    // Each account is reached only through one contact: the opportunity has no customer, so
    // opportunity_account names none of them.
    let mut conn = db();
    for id in ["a2", "a3", "a4", "a5"] {
        account(&conn, id);
    }
    opportunity(&conn, "o1", None, None, None, None);
    for (id, account) in [("c2", "a2"), ("c3", "a3"), ("c4", "a4"), ("c5", "a5")] {
        contact(&conn, id, Some(account), Some("account"));
    }
    conn.execute(
        "UPDATE contact SET emailaddress1 = ' ' || upper(contactid) || '@Example.com ' WHERE contactid <> 'c3'",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE contact SET new_synctomkto = 0 WHERE contactid = 'c5'",
        [],
    )
    .unwrap();
    connection(&conn, "x2", ("o1", 3, None), ("c2", 2, None), 0);
    connection(&conn, "x3", ("o1", 3, None), ("c3", 2, None), 0);
    assert_eq!(
        rows(
            &conn,
            "SELECT contactid || ' ' || coalesce(lead_key, '-') FROM opportunity_contact_role ORDER BY 1"
        ),
        ["c2 c2@example.com", "c3 -"],
        "a role carries its contact's email key"
    );
    let companies = "SELECT key FROM mkto_company ORDER BY 1";
    assert_eq!(
        rows(&conn, companies),
        ["a2"],
        "role holders with an email; not c3 (no email), c4 (no role) or c5"
    );
    let export = ExportConfig {
        leads: crate::config::LeadScope::AllInScope,
        ..ExportConfig::default()
    };
    install(&mut conn, &RulesConfig::default(), &export).unwrap();
    assert_eq!(
        rows(&conn, companies),
        ["a2", "a4"],
        "every in-scope contact with an email; not c5, filtered out"
    );
}

#[test]
fn widening_sends_every_in_scope_contact_with_an_email_and_every_in_scope_account() {
    let mut conn = db();
    account(&conn, "a1");
    account(&conn, "a2");
    account(&conn, "a3");
    conn.execute(
        "UPDATE account SET new_synctomkto = 0 WHERE accountid = 'a3'",
        [],
    )
    .unwrap();
    contact(&conn, "c1", Some("a1"), Some("account"));
    contact(&conn, "c2", None, None);
    contact(&conn, "c3", None, None);
    conn.execute(
        "UPDATE contact SET emailaddress1 = contactid || '@example.com' WHERE contactid <> 'c3'",
        [],
    )
    .unwrap();
    let leads = "SELECT key || ' ' || json_extract(payload, '$.externalPersonId') FROM mkto_lead ORDER BY 1";
    let companies = "SELECT key FROM mkto_company ORDER BY 1";
    assert!(rows(&conn, leads).is_empty(), "no role holders: no leads");
    assert!(rows(&conn, companies).is_empty());
    let export = ExportConfig {
        leads: crate::config::LeadScope::AllInScope,
        companies: crate::config::CompanyScope::AllInScope,
        ..ExportConfig::default()
    };
    install(&mut conn, &RulesConfig::default(), &export).unwrap();
    assert_eq!(
        rows(&conn, leads),
        ["c1@example.com c1", "c2@example.com c2"],
        "a contact without an email is not a standing skip"
    );
    assert_eq!(
        rows(&conn, companies),
        ["a1", "a2"],
        "not the account out of scope"
    );
}

#[test]
fn mkto_lead_folds_contacts_sharing_an_email_into_the_latest_and_lists_them_all() {
    let mut conn = db();
    for (id, email, modified) in [
        ("c3", " Ann@Example.com", "2026-03-01T00:00:00Z"),
        ("c1", "ann@example.com ", "2026-01-01T00:00:00Z"),
        ("c2", "ANN@example.com", "2026-03-01T00:00:00Z"),
        ("c4", "bob@example.com", "2026-01-01T00:00:00Z"),
    ] {
        contact(&conn, id, None, None);
        conn.execute(
            "UPDATE contact SET emailaddress1 = ?2, modifiedon = ?3 WHERE contactid = ?1",
            params![id, email, modified],
        )
        .unwrap();
    }
    let export = ExportConfig {
        leads: crate::config::LeadScope::AllInScope,
        ..ExportConfig::default()
    };
    install(&mut conn, &RulesConfig::default(), &export).unwrap();
    assert_eq!(
        rows(
            &conn,
            "SELECT key || ' ' || source_id || ' ' || contactids FROM mkto_lead ORDER BY key"
        ),
        [
            r#"ann@example.com c2 ["c1","c2","c3"]"#,
            r#"bob@example.com c4 ["c4"]"#,
        ],
        "the latest change wins, the lower id on a tie; contactids in id order"
    );
}

#[test]
fn mkto_lead_finds_the_contacts_of_an_email_through_its_index() {
    // contactids is a subquery per lead: without the index, reading the column would scan every
    // contact once per lead.
    let conn = db();
    let plan = rows(&conn, "EXPLAIN QUERY PLAN SELECT contactids FROM mkto_lead");
    assert!(
        plan.iter()
            .any(|step| step.contains("INDEX contact_by_email_key (email_key=?)")),
        "{plan:#?}"
    );
}

#[test]
fn reading_one_opportunitys_rules_does_not_scan_the_org() {
    // explain, and anyone auditing with sqlite3, filters these views on one opportunity: SQLite
    // must push the filter down to the staged records (a GROUP BY in opportunity_contact_role
    // once stopped it, and reading one opportunity's roles read every claim).
    let conn = db();
    account(&conn, "a1");
    for n in 0..300 {
        let (id, customer) = (format!("o{n}"), format!("c{n}"));
        contact(&conn, &customer, Some("a1"), Some("account"));
        opportunity(&conn, &id, Some(&customer), Some("contact"), None, None);
        connection(
            &conn,
            &format!("x{n}"),
            (&id, 3, None),
            (&customer, 2, None),
            0,
        );
    }
    for view in [
        "opportunity_customer",
        "opportunity_account",
        "opportunity_connection",
        "opportunity_role_claim",
        "opportunity_role_candidate",
        "opportunity_contact_role",
    ] {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT count(*) FROM {view} WHERE opportunityid = 'o7'"
            ))
            .unwrap();
        let found: i64 = stmt.query_row([], |r| r.get(0)).unwrap();
        assert!(found > 0, "{view} has rows for o7");
        let scanned = stmt.get_status(rusqlite::StatementStatus::FullscanStep);
        assert!(
            scanned < 100,
            "{view}: {scanned} rows scanned for one opportunity"
        );
    }
}
