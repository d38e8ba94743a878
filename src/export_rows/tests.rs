//! The incremental refresh against the definition: a small random org is staged and evaluated
//! in full, then random changes arrive page by page (records changed, moved, tombstoned,
//! re-typed, emails folded and unfolded, roles re-categorized, users deleted) with random
//! acknowledgements in between, and after every refresh the stored rows must equal a fresh
//! full evaluation of the views (`verify`), `pending` and the removed keys included.

use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::*;
use crate::config::Config;
use crate::db::texts;
use crate::source::page;

const ACCOUNTS: u32 = 5;
const CONTACTS: u32 = 8;
const OPPORTUNITIES: u32 = 7;
const CONNECTIONS: u32 = 10;
const ROLES: u32 = 3;
const USERS: u32 = 3;

fn id(kind: u32, n: u32) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

fn account(n: u32) -> String {
    id(1, n)
}
fn contact(n: u32) -> String {
    id(2, n)
}
fn opportunity(n: u32) -> String {
    id(3, n)
}
fn connection(n: u32) -> String {
    id(4, n)
}
fn role(n: u32) -> String {
    id(5, n)
}
fn user(n: u32) -> String {
    id(8, n)
}

/// A lookup: its value and, sometimes, its lookuplogicalname annotation.
fn lookup(
    record: &mut Map<String, Value>,
    field: &str,
    target: Option<(&str, String)>,
    annotate: bool,
) {
    match target {
        Some((kind, value)) => {
            record.insert(format!("_{field}_value"), json!(value));
            if annotate {
                record.insert(
                    format!("_{field}_value@Microsoft.Dynamics.CRM.lookuplogicalname"),
                    json!(kind),
                );
            }
        }
        None => {
            record.insert(format!("_{field}_value"), Value::Null);
        }
    }
}

/// One change, as a Web API record of an entity set (or a delete of one).
#[derive(Debug, Clone)]
enum Change {
    Account {
        n: u32,
        sync: Option<bool>,
        owner: Option<u32>,
        name: u8,
    },
    Contact {
        n: u32,
        email: u8,
        parent: Option<(bool, u32)>,
        annotate: bool,
        sync: Option<bool>,
        owner: Option<u32>,
        modified: u8,
    },
    Opportunity {
        n: u32,
        customer: Option<(bool, u32)>,
        annotate: bool,
        parent_account: Option<u32>,
        parent_contact: Option<u32>,
        sync: Option<bool>,
        named: bool,
        state: u8,
        owner: Option<(bool, u32)>,
    },
    Connection {
        n: u32,
        opportunity: u32,
        other: (u8, u32),
        reversed: bool,
        role: Option<u32>,
        active: bool,
    },
    Role {
        n: u32,
        category: u8,
        active: bool,
    },
    User {
        n: u32,
        name: u8,
    },
    Delete {
        set: u8,
        n: u32,
    },
}

impl Change {
    fn entity_set(&self) -> &'static str {
        match self {
            Change::Account { .. } => "accounts",
            Change::Contact { .. } => "contacts",
            Change::Opportunity { .. } => "opportunities",
            Change::Connection { .. } => "connections",
            Change::Role { .. } => "connectionroles",
            Change::User { .. } => "systemusers",
            Change::Delete { set, .. } => [
                "accounts",
                "contacts",
                "opportunities",
                "connections",
                "systemusers",
            ][*set as usize % 5],
        }
    }

    fn record(&self) -> Value {
        let mut r = Map::new();
        match self {
            Change::Account {
                n,
                sync,
                owner,
                name,
            } => {
                r.insert("accountid".into(), json!(account(*n)));
                r.insert("name".into(), json!(format!("Account {name}")));
                r.insert("new_synctomkto".into(), json!(sync));
                lookup(
                    &mut r,
                    "ownerid",
                    owner.map(|u| ("systemuser", user(u))),
                    true,
                );
            }
            Change::Contact {
                n,
                email,
                parent,
                annotate,
                sync,
                owner,
                modified,
            } => {
                r.insert("contactid".into(), json!(contact(*n)));
                let emails = [
                    None,
                    Some("ana@example.com"),
                    Some(" ANA@example.com"),
                    Some("bo@example.com"),
                    Some(""),
                    Some("cy@example.com"),
                ];
                r.insert(
                    "emailaddress1".into(),
                    json!(emails[*email as usize % emails.len()]),
                );
                r.insert("lastname".into(), json!(format!("C{n}")));
                let parent = parent.map(|(is_account, p)| {
                    if is_account {
                        ("account", account(p % ACCOUNTS))
                    } else {
                        ("contact", contact(p % CONTACTS))
                    }
                });
                lookup(&mut r, "parentcustomerid", parent, *annotate);
                r.insert("new_synctomkto".into(), json!(sync));
                r.insert(
                    "modifiedon".into(),
                    json!(format!("2025-01-{:02}T00:00:00Z", 1 + modified % 3)),
                );
                lookup(
                    &mut r,
                    "ownerid",
                    owner.map(|u| ("systemuser", user(u))),
                    true,
                );
            }
            Change::Opportunity {
                n,
                customer,
                annotate,
                parent_account,
                parent_contact,
                sync,
                named,
                state,
                owner,
            } => {
                r.insert("opportunityid".into(), json!(opportunity(*n)));
                r.insert(
                    "name".into(),
                    json!(if *named {
                        Some(format!("Deal {n}"))
                    } else {
                        None
                    }),
                );
                r.insert("estimatedvalue".into(), json!(1000 * n));
                r.insert("estimatedvalue_base".into(), json!(1100 * n));
                r.insert("statecode".into(), json!(state % 3));
                let customer = customer.map(|(is_account, c)| {
                    if is_account {
                        ("account", account(c % ACCOUNTS))
                    } else {
                        ("contact", contact(c % CONTACTS))
                    }
                });
                lookup(&mut r, "customerid", customer, *annotate);
                lookup(
                    &mut r,
                    "parentaccountid",
                    parent_account.map(|a| ("account", account(a % ACCOUNTS))),
                    true,
                );
                lookup(
                    &mut r,
                    "parentcontactid",
                    parent_contact.map(|c| ("contact", contact(c % CONTACTS))),
                    true,
                );
                r.insert("new_synctomkto".into(), json!(sync));
                let owner = owner.map(|(team, u)| {
                    if team {
                        ("team", id(9, u))
                    } else {
                        ("systemuser", user(u))
                    }
                });
                lookup(&mut r, "ownerid", owner, true);
            }
            Change::Connection {
                n,
                opportunity: o,
                other,
                reversed,
                role: role_n,
                active,
            } => {
                r.insert("connectionid".into(), json!(connection(*n)));
                let (other_id, other_code) = match other.0 % 4 {
                    0 | 1 => (contact(other.1 % CONTACTS), 2),
                    2 => (account(other.1 % ACCOUNTS), 1),
                    _ => (opportunity(other.1 % OPPORTUNITIES), 3),
                };
                let (first, second) = if *reversed {
                    ((other_id, other_code), (opportunity(*o), 3))
                } else {
                    ((opportunity(*o), 3), (other_id, other_code))
                };
                r.insert("_record1id_value".into(), json!(first.0));
                r.insert("record1objecttypecode".into(), json!(first.1));
                r.insert("_record2id_value".into(), json!(second.0));
                r.insert("record2objecttypecode".into(), json!(second.1));
                let role_field = if *reversed {
                    "_record1roleid_value"
                } else {
                    "_record2roleid_value"
                };
                r.insert(
                    role_field.into(),
                    json!(role_n.map(|x| role(x % (ROLES + 1)))),
                );
                r.insert("statecode".into(), json!(if *active { 0 } else { 1 }));
            }
            Change::Role {
                n,
                category,
                active,
            } => {
                r.insert("connectionroleid".into(), json!(role(*n)));
                r.insert("name".into(), json!(format!("Role {n}")));
                r.insert(
                    "category".into(),
                    json!([1000, 1001][*category as usize % 2]),
                );
                r.insert("statecode".into(), json!(if *active { 0 } else { 1 }));
            }
            Change::User { n, name } => {
                r.insert("systemuserid".into(), json!(user(*n)));
                r.insert("fullname".into(), json!(format!("User {name}")));
                r.insert(
                    "internalemailaddress".into(),
                    json!(format!("user{n}@example.com")),
                );
            }
            Change::Delete { set, n } => {
                let id = match set % 5 {
                    0 => account(n % ACCOUNTS),
                    1 => contact(n % CONTACTS),
                    2 => opportunity(n % OPPORTUNITIES),
                    3 => connection(n % CONNECTIONS),
                    _ => user(n % USERS),
                };
                r.insert(
                    "@odata.context".into(),
                    json!(format!(
                        "https://org.invalid/api/data/v9.2/$metadata#{}/$deletedEntity",
                        self.entity_set()
                    )),
                );
                r.insert("id".into(), json!(id));
                r.insert("reason".into(), json!("deleted"));
            }
        }
        Value::Object(r)
    }
}

fn change() -> impl Strategy<Value = Change> {
    let owner = prop::option::of(0..USERS);
    prop_oneof![
        1 => (0..ACCOUNTS, prop::option::of(any::<bool>()), owner.clone(), 0u8..3)
            .prop_map(|(n, sync, owner, name)| Change::Account { n, sync, owner, name }),
        3 => (0..CONTACTS, 0u8..6, prop::option::of((any::<bool>(), 0..CONTACTS)), any::<bool>(), prop::option::of(any::<bool>()), owner.clone(), 0u8..3)
            .prop_map(|(n, email, parent, annotate, sync, owner, modified)| Change::Contact { n, email, parent, annotate, sync, owner, modified }),
        3 => (0..OPPORTUNITIES, prop::option::of((any::<bool>(), 0..CONTACTS)), any::<bool>(), prop::option::of(0..ACCOUNTS), prop::option::of(0..CONTACTS), prop::option::of(any::<bool>()), prop::bool::weighted(0.9), 0u8..3, prop::option::of((prop::bool::weighted(0.2), 0..USERS)))
            .prop_map(|(n, customer, annotate, parent_account, parent_contact, sync, named, state, owner)| Change::Opportunity { n, customer, annotate, parent_account, parent_contact, sync, named, state, owner }),
        4 => (0..CONNECTIONS, 0..OPPORTUNITIES, (0u8..4, 0..CONTACTS), any::<bool>(), prop::option::of(0..ROLES + 1), prop::bool::weighted(0.8))
            .prop_map(|(n, opportunity, other, reversed, role, active)| Change::Connection { n, opportunity, other, reversed, role, active }),
        1 => (0..ROLES, 0u8..2, prop::bool::weighted(0.8)).prop_map(|(n, category, active)| Change::Role { n, category, active }),
        1 => (0..USERS, 0u8..3).prop_map(|(n, name)| Change::User { n, name }),
        1 => (0u8..5, 0..CONNECTIONS).prop_map(|(set, n)| Change::Delete { set, n }),
    ]
}

/// One round: changes staged (a page per change), and which export rows Marketo then
/// acknowledges (by position among the rows, with the payload as it is or another one) or
/// forgets.
#[derive(Debug, Clone)]
struct Round {
    changes: Vec<Change>,
    acks: Vec<(u16, u8)>,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec(change(), 1..6),
        prop::collection::vec((any::<u16>(), 0u8..4), 0..6),
    )
        .prop_map(|(changes, acks)| Round { changes, acks })
}

/// Account 0, as staged by the unit tests below.
fn account_0() -> Change {
    Change::Account {
        n: 0,
        sync: None,
        owner: None,
        name: 0,
    }
}

/// A named opportunity whose customer is account 0.
fn opportunity_of_account_0(n: u32) -> Change {
    Change::Opportunity {
        n,
        customer: Some((true, 0)),
        annotate: true,
        parent_account: None,
        parent_contact: None,
        sync: None,
        named: true,
        state: 0,
        owner: None,
    }
}

/// A database with account 0 and opportunity `n` of it staged, not yet refreshed.
fn db_with_opportunity_of_account_0(n: u32) -> Connection {
    with_opportunity_of_account_0(db(), n)
}

/// `file_db` with account 0 and its opportunity 0 staged, not yet refreshed.
fn file_db_with_opportunity_of_account_0(dir: &tempfile::TempDir) -> Connection {
    with_opportunity_of_account_0(file_db(dir), 0)
}

fn with_opportunity_of_account_0(mut conn: Connection, n: u32) -> Connection {
    stage(&mut conn, &account_0());
    stage(&mut conn, &opportunity_of_account_0(n));
    conn
}

fn db() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::db::configure(&conn).unwrap();
    crate::db::migrate(&mut conn).unwrap();
    with_rules_and_a_run(conn)
}

/// A database in a file in WAL mode, as `oppsync` opens one: a full evaluation commits as it
/// goes there.
fn file_db(dir: &tempfile::TempDir) -> Connection {
    with_rules_and_a_run(crate::db::open(&dir.path().join("oppsync.db")).unwrap())
}

fn with_rules_and_a_run(mut conn: Connection) -> Connection {
    let config = Config::default();
    crate::rules::install(&mut conn, &config.rules, &config.export).unwrap();
    conn.execute(
        "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'test', '[]', 'now')",
        [],
    )
    .unwrap();
    conn
}

fn stage(conn: &mut Connection, change: &Change) {
    let text = json!({
        "@odata.context": format!("https://org.invalid/api/data/v9.2/$metadata#{}", change.entity_set()),
        "value": [change.record()],
    })
    .to_string();
    let page = page::parse("test", &text, None).unwrap();
    crate::stage::stage_page(conn, 1, "test", &page).unwrap();
}

/// Marketo acknowledges (or forgets) some export rows, as push and its deletes would.
fn acknowledge(conn: &Connection, acks: &[(u16, u8)]) {
    let rows: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT object, key, payload FROM export_row WHERE key IS NOT NULL ORDER BY object, key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    if rows.is_empty() {
        return;
    }
    for &(at, how) in acks {
        let (object, key, payload) = &rows[at as usize % rows.len()];
        match how {
            0 => {
                conn.execute(
                    "DELETE FROM mkto_ack WHERE object = ?1 AND key = ?2",
                    [object, key],
                )
                .unwrap();
            }
            _ => {
                let payload = match (how, payload) {
                    (1, Some(p)) => p.clone(),
                    _ => "{\"older\":true}".to_string(),
                };
                conn.execute(
                    "INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
                     VALUES (?1, ?2, ?3, '1', 1, 'now')
                     ON CONFLICT (object, key) DO UPDATE SET payload = excluded.payload",
                    [object, key, &payload],
                )
                .unwrap();
            }
        }
    }
}

fn check(conn: &mut Connection, config: &Config, when: &str) -> Result<(), TestCaseError> {
    let differences = verify(conn, config).unwrap();
    prop_assert!(
        differences.is_empty(),
        "{when}: the stored export rows differ from the views: {differences:?}"
    );
    let roles = contact_roles_not_candidates(conn);
    prop_assert!(
        roles.is_empty(),
        "{when}: opportunity_contact_role and the candidates not left out differ: {roles:?}"
    );
    // verify compares two evaluations made the same way; this reads the views themselves.
    let derived = derived_not_from_views(conn);
    prop_assert!(
        derived.is_empty(),
        "{when}: derived_opportunity and the views' counts differ: {derived:?}"
    );
    Ok(())
}

/// The rows of `derived_opportunity` that the rule views, read one opportunity at a time, do
/// not give, and the other way round, each marked with the side that has it.
fn derived_not_from_views(conn: &Connection) -> Vec<String> {
    let views = "SELECT oa.opportunityid, oa.accountid,
            (SELECT count(*) FROM opportunity_contact_role r WHERE r.opportunityid = oa.opportunityid)
        FROM opportunity_account oa";
    let stored = "SELECT opportunityid, accountid, contact_roles FROM derived_opportunity";
    texts(
        conn,
        &format!(
            "SELECT 'stored only: ' || opportunityid FROM ({stored} EXCEPT {views})
             UNION ALL SELECT 'views only: ' || opportunityid FROM ({views} EXCEPT {stored})"
        ),
        [],
    )
}

/// The rows that `opportunity_contact_role` (a ranking of the claims that stand) and the
/// candidates of `opportunity_role_candidate` that were not left out (a ranking of every claim)
/// do not share, each marked with the side that has it.
fn contact_roles_not_candidates(conn: &Connection) -> Vec<String> {
    let columns = "opportunityid, contactid, role, is_primary, rule, source_id";
    let kept =
        format!("SELECT {columns} FROM opportunity_role_candidate WHERE left_out_reason IS NULL");
    let roles = format!("SELECT {columns} FROM opportunity_contact_role");
    let sql = format!(
        "SELECT 'role only: ' || source_id FROM ({roles} EXCEPT {kept})
         UNION ALL SELECT 'candidate only: ' || source_id FROM ({kept} EXCEPT {roles})"
    );
    texts(conn, &sql, [])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_refresh_gives_what_a_full_evaluation_gives(
        initial in prop::collection::vec(change(), 5..30),
        rounds in prop::collection::vec(round(), 1..6),
    ) {
        let mut conn = db();
        let config = Config::default();
        for change in &initial {
            stage(&mut conn, change);
        }
        let first = refresh(&mut conn, &config).unwrap();
        prop_assert_eq!(first.how, Refresh::Full(FullBecause::NoneComplete));
        check(&mut conn, &config, "after the first evaluation")?;
        for (i, round) in rounds.iter().enumerate() {
            acknowledge(&conn, &round.acks);
            check(&mut conn, &config, &format!("round {i}, after acknowledgements"))?;
            for change in &round.changes {
                stage(&mut conn, change);
            }
            let refreshed = refresh(&mut conn, &config).unwrap();
            prop_assert!(
                matches!(refreshed.how, Refresh::Incremental { .. } | Refresh::Current),
                "round {}: {:?}", i, refreshed.how
            );
            check(&mut conn, &config, &format!("round {i}, after {:?}", round.changes))?;
        }
    }
}

#[test]
fn a_refresh_with_nothing_staged_since_does_nothing_and_a_new_definition_evaluates_in_full() {
    let mut conn = db_with_opportunity_of_account_0(0);
    let mut config = Config::default();
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::NoneComplete)
    );
    assert_eq!(refresh(&mut conn, &config).unwrap().how, Refresh::Current);
    // The same account staged again unchanged leaves nothing to do.
    stage(&mut conn, &account_0());
    assert_eq!(refresh(&mut conn, &config).unwrap().how, Refresh::Current);
    config
        .mapping
        .opportunity
        .insert("expectedRevenue".into(), "estimatedvalue".into());
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::DefinitionChanged)
    );
    let payload: String = conn
        .query_row(
            "SELECT payload FROM export_row WHERE object = 'opportunity'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(payload.contains("\"expectedRevenue\":0"), "{payload}");
    assert!(verify(&mut conn, &config).unwrap().is_empty());
}

#[test]
fn a_full_pull_or_a_change_to_most_opportunities_evaluates_in_full_and_says_so() {
    let mut conn = db();
    stage(&mut conn, &account_0());
    // Over the 1,000 opportunities up to which a refresh is always partial, in one page.
    let text = json!({
        "@odata.context": "https://org.invalid/api/data/v9.2/$metadata#opportunities",
        "value": (0..1001).map(|n| opportunity_of_account_0(n).record()).collect::<Vec<_>>(),
    })
    .to_string();
    let page = page::parse("test", &text, None).unwrap();
    crate::stage::stage_page(&mut conn, 1, "test", &page).unwrap();
    let config = Config::default();
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::NoneComplete)
    );
    invalidate(&conn).unwrap();
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::Asked)
    );
    // Every opportunity points at account 0: filtering it out touches them all.
    stage(
        &mut conn,
        &Change::Account {
            n: 0,
            sync: Some(false),
            owner: None,
            name: 0,
        },
    );
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::LargeChange)
    );
    assert!(verify(&mut conn, &config).unwrap().is_empty());
    // One opportunity changed is a partial refresh again.
    stage(&mut conn, &opportunity_of_account_0(1001));
    assert!(matches!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Incremental {
            opportunities: 1,
            ..
        }
    ));
}

/// How many thousands of SQLite's steps a partial refresh takes for one opportunity changed
/// among `n` of account 0, all owned by user 1, a staged user.
fn steps_to_refresh_one_of(n: u32) -> u64 {
    let mut conn = db();
    stage(&mut conn, &account_0());
    stage(&mut conn, &Change::User { n: 1, name: 0 });
    let owned = |n: u32, named: bool| Change::Opportunity {
        n,
        customer: Some((true, 0)),
        annotate: true,
        parent_account: None,
        parent_contact: None,
        sync: None,
        named,
        state: 0,
        owner: Some((false, 1)),
    };
    let text = json!({
        "@odata.context": "https://org.invalid/api/data/v9.2/$metadata#opportunities",
        "value": (0..n).map(|n| owned(n, true).record()).collect::<Vec<_>>(),
    })
    .to_string();
    let page = page::parse("test", &text, None).unwrap();
    crate::stage::stage_page(&mut conn, 1, "test", &page).unwrap();
    let config = Config::default();
    refresh(&mut conn, &config).unwrap();
    let named = count(
        &conn,
        &format!(
            "SELECT count(*) FROM export_row WHERE object = 'opportunity' AND sales_person_id = '{}'",
            user(1)
        ),
    );
    assert_eq!(named, i64::from(n));
    stage(&mut conn, &owned(0, false));
    let (how, steps) =
        crate::db::steps_taken(&mut conn, |conn| refresh(conn, &config).unwrap().how);
    assert!(
        matches!(
            how,
            Refresh::Incremental {
                opportunities: 1,
                ..
            }
        ),
        "{how:?}"
    );
    assert!(verify(&mut conn, &config).unwrap().is_empty());
    steps
}

#[test]
fn a_partial_refresh_reads_one_row_per_user_for_its_sales_persons() {
    // Copying every stored row that names a user concerned read all 1,000 here.
    let few = steps_to_refresh_one_of(100);
    let many = steps_to_refresh_one_of(1000);
    assert!(
        many < few * 3 / 2,
        "{many} thousand steps for 1,000 opportunities, {few} for 100"
    );
}

#[test]
fn verify_names_a_stored_row_that_no_longer_matches() {
    let mut conn = db_with_opportunity_of_account_0(1);
    let config = Config::default();
    refresh(&mut conn, &config).unwrap();
    conn.execute(
        "UPDATE export_row SET payload = '{}' WHERE object = 'opportunity'",
        [],
    )
    .unwrap();
    let differences = verify(&mut conn, &config).unwrap();
    let sides: Vec<(&str, &str, Option<&str>)> = differences
        .iter()
        .map(|d| (d.side, d.object.as_str(), d.key.as_deref()))
        .collect();
    let key = opportunity(1);
    assert_eq!(
        sides,
        [
            ("stored only", "opportunity", Some(key.as_str())),
            ("fresh only", "opportunity", Some(key.as_str()))
        ]
    );
}

/// The indexes of `export_row`, by name.
fn export_row_indexes(conn: &Connection) -> Vec<String> {
    texts(
        conn,
        "SELECT name FROM main.sqlite_master
         WHERE type = 'index' AND tbl_name = 'export_row' AND sql IS NOT NULL ORDER BY name",
        [],
    )
}

/// The one integer `sql` gives.
fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_full_evaluation_stopped_after_a_commit_is_done_again_and_builds_every_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file_db_with_opportunity_of_account_0(&dir);
    let indexes = export_row_indexes(&conn);
    // Rows stored, so that the next full evaluation is not a first one: it commits as it goes.
    refresh(&mut conn, &Config::default()).unwrap();
    let config = with_an_opportunity_mapping();
    // The opportunity's raw record made unreadable: merging its mapping fails, after the
    // companies were stored and committed.
    let raw = unreadable_opportunity(&conn);
    let err = refresh(&mut conn, &config).unwrap_err();
    assert!(format!("{err:#}").contains("mkto_opportunity"), "{err:#}");

    assert_eq!(count(&conn, "SELECT built FROM export_state"), 0);
    let stored = "SELECT count(*) FROM export_row WHERE object = ";
    assert_eq!(count(&conn, &format!("{stored} 'company'")), 1);
    assert_eq!(count(&conn, &format!("{stored} 'opportunity'")), 0);
    let kept: Vec<String> = KEPT_WHILE_FILLING.iter().map(|n| n.to_string()).collect();
    assert_eq!(export_row_indexes(&conn), kept, "the others were dropped");
    let aside = texts(
        &conn,
        "SELECT name FROM export_index_aside ORDER BY name",
        [],
    );
    let dropped: Vec<String> = indexes
        .iter()
        .filter(|n| !kept.contains(n))
        .cloned()
        .collect();
    assert_eq!(aside, dropped, "and noted");
    assert!(!is_current(&conn, &config).unwrap());

    conn.execute("UPDATE opportunity SET raw = ?1", [&raw])
        .unwrap();
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::NoneComplete)
    );
    assert_eq!(export_row_indexes(&conn), indexes);
    assert_eq!(count(&conn, "SELECT count(*) FROM export_index_aside"), 0);
    assert!(verify(&mut conn, &config).unwrap().is_empty());
}

/// Makes the staged opportunity's raw record unreadable, so that merging an opportunity mapping
/// fails (after the companies are stored); returns the record as it was.
fn unreadable_opportunity(conn: &Connection) -> String {
    let raw: String = conn
        .query_row("SELECT raw FROM opportunity", [], |r| r.get(0))
        .unwrap();
    conn.execute("UPDATE opportunity SET raw = 'not json'", [])
        .unwrap();
    raw
}

/// A config whose opportunity mapping reads the staged record's raw JSON.
fn with_an_opportunity_mapping() -> Config {
    let mut config = Config::default();
    config
        .mapping
        .opportunity
        .insert("expectedRevenue".into(), "estimatedvalue".into());
    config
}

#[test]
fn a_first_evaluation_is_one_transaction_holding_the_database_and_leaves_it_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file_db_with_opportunity_of_account_0(&dir);
    let config = with_an_opportunity_mapping();
    let raw = unreadable_opportunity(&conn);
    let err = refresh(&mut conn, &config).unwrap_err();
    assert!(format!("{err:#}").contains("mkto_opportunity"), "{err:#}");

    // The companies were evaluated before the failure, yet nothing was committed: one
    // transaction, rolled back, where WAL mode would have committed them (test above).
    assert_eq!(count(&conn, "SELECT count(*) FROM export_row"), 0);
    assert_eq!(crate::db::journal_mode(&conn).unwrap(), "wal");
    let reader = Connection::open(dir.path().join("oppsync.db")).unwrap();
    assert_eq!(
        crate::db::journal_mode(&reader).unwrap(),
        "wal",
        "and the lock let go"
    );
    drop(reader);

    conn.execute("UPDATE opportunity SET raw = ?1", [&raw])
        .unwrap();
    assert_eq!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(FullBecause::NoneComplete)
    );
    assert_eq!(crate::db::journal_mode(&conn).unwrap(), "wal");
    assert!(verify(&mut conn, &config).unwrap().is_empty());
}

#[test]
fn a_first_evaluation_with_the_database_open_elsewhere_commits_as_it_goes_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file_db_with_opportunity_of_account_0(&dir);
    let config = with_an_opportunity_mapping();
    unreadable_opportunity(&conn);
    // A reader has the database open (`sqlite3`, say): it is not locked out.
    let reader = Connection::open(dir.path().join("oppsync.db")).unwrap();
    let staged = "SELECT count(*) FROM opportunity";
    assert_eq!(count(&reader, staged), 1);
    refresh(&mut conn, &config).unwrap_err();

    assert_eq!(
        count(
            &reader,
            "SELECT count(*) FROM export_row WHERE object = 'company'"
        ),
        1
    );
    assert_eq!(crate::db::journal_mode(&conn).unwrap(), "wal");
}

/// What a refresh made of this connection's temp schema: tables and views other than the
/// stored ones' stand-ins.
fn temp_objects(conn: &Connection) -> Vec<String> {
    texts(
        conn,
        "SELECT type || ' ' || name FROM temp.sqlite_master
         WHERE type IN ('table', 'view') ORDER BY type, name",
        [],
    )
}

#[test]
fn a_refresh_leaves_no_temp_table_or_view_behind() {
    // A temporary view left on a writing connection would shadow the stored view for every
    // later statement; a temp table would hold the connection's memory and disk.
    let mut conn = db_with_opportunity_of_account_0(0);
    let config = Config::default();
    assert!(matches!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Full(_)
    ));
    assert_eq!(temp_objects(&conn), Vec::<String>::new());
    stage(&mut conn, &opportunity_of_account_0(1));
    assert!(matches!(
        refresh(&mut conn, &config).unwrap().how,
        Refresh::Incremental { .. }
    ));
    assert_eq!(temp_objects(&conn), Vec::<String>::new());
}

#[test]
fn a_view_is_read_later_only_when_named_as_a_whole_identifier() {
    for (text, name, named) in [
        ("FROM mkto_opportunity o", "mkto_opportunity", true),
        ("JOIN mkto_opportunity_role r", "mkto_opportunity", false),
        ("FROM x_mkto_lead", "mkto_lead", false),
        ("(SELECT key FROM mkto_company)", "mkto_company", true),
        ("mkto_company", "mkto_company", true),
        ("temp.mkto_lead", "mkto_lead", true),
        ("", "mkto_lead", false),
        ("-- as mkto_lead does\nSELECT 1", "mkto_lead", false),
        (
            "SELECT key -- of mkto_lead\nFROM mkto_company",
            "mkto_lead",
            false,
        ),
        ("-- a comment\nFROM mkto_lead", "mkto_lead", true),
    ] {
        assert_eq!(mentions(text, name), named, "{name} in {text:?}");
    }
}

/// A transaction on `conn` after a full evaluation, with the refresh scripts run as a partial
/// refresh runs them: the target roots, and the copies of the records they depend on.
fn with_refresh_scripts_run(conn: &mut Connection) -> Transaction<'_> {
    refresh(conn, &Config::default()).unwrap();
    let tx = conn.transaction().unwrap();
    for script in REFRESH {
        tx.execute_batch(script.text).unwrap();
    }
    tx
}

#[test]
fn a_partial_refresh_finds_the_contacts_of_a_leads_email_through_an_index() {
    // mkto_lead's contactids is a subquery per lead over the contacts of its email. Over the
    // contacts a partial refresh copies, without an index it scanned every copy once per lead
    // (3.6 s instead of 20 ms for a 1% change at 100k opportunities).
    let mut conn = db_with_opportunity_of_account_0(0);
    let tx = with_refresh_scripts_run(&mut conn);
    let lead = VIEWS
        .iter()
        .find(|file| file.view_name() == "mkto_lead")
        .unwrap();
    view_from_text(&tx, lead).unwrap();
    let plan = crate::db::query_plan(&tx, "SELECT contactids FROM temp.mkto_lead", []);
    assert!(
        plan.contains("INDEX subset_contact_email_key (email_key=?)"),
        "{plan}"
    );
}

#[test]
fn a_partial_refresh_copies_every_staged_column_but_raw() {
    // 2_subset.sql names the columns it copies, to leave out `raw`: a column a migration adds
    // to a staging table has to be added there too, or the views evaluated over the copies
    // lose it.
    let mut conn = db_with_opportunity_of_account_0(0);
    let tx = with_refresh_scripts_run(&mut conn);
    let columns = |schema: &str, table: &str| -> Vec<String> {
        texts(
            &tx,
            "SELECT name FROM pragma_table_xinfo(?1, ?2) ORDER BY name",
            [table, schema],
        )
    };
    for table in ["opportunity", "contact", "account", "connection"] {
        let mut staged = columns("main", table);
        assert!(staged.iter().any(|c| c == "raw"), "{table}: {staged:?}");
        staged.retain(|c| c != "raw");
        assert_eq!(columns("temp", table), staged, "{table}");
    }
}

#[test]
fn a_full_evaluation_reads_the_skip_reasons_of_companies_and_opportunities_from_an_index() {
    // Every lead, opportunity and role looks up the skip reason of its company or opportunity.
    // Read from the shadow's row, each was a page read in no order: at 1M opportunities with
    // scattered ids, the first evaluation took 74.5-76.1 s instead of 68.5-70.5 s.
    let mut conn = db_with_opportunity_of_account_0(0);
    refresh(&mut conn, &Config::default()).unwrap();
    let tx = conn.transaction().unwrap();
    let company_at = VIEWS
        .iter()
        .position(|file| file.view_name() == "mkto_company")
        .unwrap();
    materialize_views(&tx, &VIEWS[..company_at], None).unwrap();
    // As a full evaluation goes: each export view in turn, shadowed once stored.
    shadow_with_stored(&tx, Object::Company, "main", 0).unwrap();
    for (view, reads, index, stored) in [
        ("mkto_lead", "payload", "mkto_company_by_key", None),
        (
            "mkto_opportunity",
            "payload",
            "mkto_company_by_key",
            Some(Object::Opportunity),
        ),
        (
            "mkto_opportunity_role",
            "skip_reason",
            "mkto_opportunity_by_key",
            None,
        ),
    ] {
        let file = VIEWS.iter().find(|f| f.view_name() == view).unwrap();
        view_from_text(&tx, file).unwrap();
        let plan = crate::db::query_plan(&tx, &format!("SELECT {reads} FROM temp.{view}"), []);
        assert!(
            plan.contains(&format!("USING COVERING INDEX {index} (key=?")),
            "{view}:\n{plan}"
        );
        if let Some(object) = stored {
            shadow_with_stored(&tx, object, "main", 0).unwrap();
        }
    }
}
