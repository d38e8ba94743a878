//! push against the Marketo simulator, both run as the real binary over loopback.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Run, SimProcess, TestDb, fixtures, marketo_env};

/// `oppsync sim marketo` as a child process; killed when dropped.
struct Sim(SimProcess);

impl std::ops::Deref for Sim {
    type Target = SimProcess;
    fn deref(&self) -> &SimProcess {
        &self.0
    }
}

impl Sim {
    fn start(extra: &[&str]) -> Sim {
        let mut args = vec!["sim", "marketo", "--port", "0", "--seed", "7"];
        args.extend_from_slice(extra);
        Sim(SimProcess::start(&args))
    }

    fn state(&self) -> Value {
        self.get("/sim/state")
    }

    fn fault(&self, fault: Value) {
        self.post("/sim/faults", &fault);
    }

    /// Deletes records in Marketo through its REST API (`path` under /rest/v1), as an
    /// administrator (or a merge) would; Marketo deletes their roles with them.
    fn delete(&self, path: &str, body: Value) {
        let token = self.get(
            "/identity/oauth/token?grant_type=client_credentials&client_id=oppsync-sim&client_secret=oppsync-sim-secret",
        )["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut response = ureq::post(&format!("{}/rest/v1/{path}", self.url))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let answer: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(answer["result"][0]["status"], "deleted", "{answer}");
    }

    /// The Marketo id of the lead with this email.
    fn lead_id(&self, email: &str) -> i64 {
        let state = self.state();
        Sim::find(&state, "leads", "email", email).unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    /// Deletes the lead with this email in Marketo; returns its id.
    fn delete_lead(&self, email: &str) -> i64 {
        let id = self.lead_id(email);
        self.delete("leads/delete.json", json!({"input": [{"id": id}]}));
        id
    }

    /// Deletes the first role Marketo holds, alone, as another integration could; returns it.
    fn delete_first_role(&self) -> Value {
        let role = self.state()["roles"][0].clone();
        self.delete(
            "opportunities/roles/delete.json",
            json!({"deleteBy": "dedupeFields", "input": [{
                "externalOpportunityId": role["externalOpportunityId"],
                "leadId": role["leadId"],
                "role": role["role"],
            }]}),
        );
        role
    }

    /// Deletes the company with this externalCompanyId in Marketo, by the id Marketo gave it
    /// (as acknowledged in `db`); returns that id.
    fn delete_company(&self, db: &TestDb, key: &str) -> i64 {
        let id: i64 = db.column(&format!(
            "SELECT marketo_id FROM mkto_ack WHERE object = 'company' AND key = '{key}'"
        ))[0]
            .parse()
            .unwrap();
        self.delete(
            "companies/delete.json",
            json!({"deleteBy": "idField", "input": [{"id": id}]}),
        );
        id
    }

    /// Deletes the opportunity with this externalOpportunityId in Marketo.
    fn delete_opportunity(&self, id: &str) {
        self.delete(
            "opportunities/delete.json",
            json!({"deleteBy": "dedupeFields", "input": [{"externalOpportunityId": id}]}),
        );
    }

    /// The roles Marketo holds for the lead with this id, as (opportunity, role).
    fn roles_of(&self, lead_id: i64) -> Vec<(String, String)> {
        let mut roles: Vec<(String, String)> = self.state()["roles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["leadId"].as_i64() == Some(lead_id))
            .map(|r| {
                (
                    r["externalOpportunityId"].as_str().unwrap().to_string(),
                    r["role"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        roles.sort();
        roles
    }

    fn find<'a>(state: &'a Value, set: &str, field: &str, value: &str) -> Option<&'a Value> {
        state[set]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[field].as_str() == Some(value))
    }
}

/// A database with the demo's first snapshot pulled, and a config whose retries are quick.
fn pulled(phase: &str) -> TestDb {
    let db = TestDb::new();
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[marketo]\nretry_base_ms = 5\nmax_attempts = 6\nrate_limit_window_secs = 1\n",
    )
    .unwrap();
    let dir = fixtures().join("demo").join(phase);
    db.run(&["pull", "--fixtures", dir.to_str().unwrap()])
        .expect_code(0);
    db
}

/// Pulls the demo's second snapshot (updates, a new opportunity, deletes) into `db`.
fn pull_changes(db: &TestDb) {
    let dir = fixtures().join("demo/2-changes");
    db.run(&["pull", "--fixtures", dir.to_str().unwrap()])
        .expect_code(0);
}

/// The demo's first snapshot pushed to a new simulator (exit 3: the contact without an email).
fn pushed() -> (TestDb, Sim) {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    push(&db, &sim).expect_code(3);
    (db, sim)
}

/// `pushed`, then the demo's second snapshot pulled, not yet pushed.
fn pushed_then_changed() -> (TestDb, Sim) {
    let (db, sim) = pushed();
    pull_changes(&db);
    (db, sim)
}

/// How many calls this database's pushes made to `path` under /rest/v1 (retries included).
fn calls_to(db: &TestDb, path: &str) -> i64 {
    db.count(&format!(
        "SELECT count(*) FROM api_call WHERE path = '/rest/v1/{path}'"
    ))
}

fn push(db: &TestDb, sim: &Sim) -> Run {
    push_with(db, sim, &[])
}

/// `push` with more settings in the environment.
fn push_with(db: &TestDb, sim: &Sim, extra: &[(&str, &str)]) -> Run {
    against(db, sim, &["push"], extra)
}

/// `oppsync ARGS` with the simulator's URL and credentials, and more settings in the
/// environment.
fn against(db: &TestDb, sim: &Sim, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut env = vec![
        ("MARKETO_BASE_URL", sim.url.as_str()),
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
    ];
    env.extend_from_slice(extra);
    db.run_with_env(args, &env)
}

/// A push to the simulator running in the background (`spawn_against`).
fn spawn_push(db: &TestDb, sim: &Sim) -> std::process::Child {
    spawn_against(db, sim, &["push"])
}

fn opp(n: u32) -> String {
    format!("a7d3c2b1-2c44-ef11-a316-000d3a5c{n:04x}")
}

const FABRIKAM: &str = "1a6c0b5e-2c44-ef11-a316-000d3a5c0001";
const DANA: &str = "8c1f3e7a-2b44-ef11-a316-000d3a5c1e01";
const MARCO: &str = "8c1f3e7a-2b44-ef11-a316-000d3a5c1e02";

#[test]
fn the_default_mappings_reach_marketo() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    let run = push(&db, &sim);
    run.expect_code(3); // the contact without an email is skipped, and so is its role
    assert!(
        run.stderr.contains("contact has no email"),
        "{}",
        run.stderr
    );
    let state = sim.state();

    let won = Sim::find(&state, "opportunities", "externalOpportunityId", &opp(2)).unwrap();
    assert_eq!(won["name"], "Ana Ruiz - consulting");
    assert_eq!(won["amount"], 12500.0, "won: actualvalue");
    assert_eq!(won["closeDate"], "2025-05-03", "closed: actualclosedate");
    assert_eq!(
        (won["isClosed"].clone(), won["isWon"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(won["stage"], "4-Close");
    assert_eq!(won["probability"], 100);
    assert_eq!(
        won["externalCompanyId"], FABRIKAM,
        "the customer contact's account"
    );
    assert_eq!(won["externalCreatedDate"], "2025-04-01T09:00:00Z");

    let lost = Sim::find(&state, "opportunities", "externalOpportunityId", &opp(5)).unwrap();
    assert_eq!(lost["stage"], "Lost", "no stepname: the state label");
    assert_eq!(
        (lost["isClosed"].clone(), lost["isWon"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(lost["amount"], 30000.0, "not won: estimatedvalue");

    let open = Sim::find(&state, "opportunities", "externalOpportunityId", &opp(1)).unwrap();
    assert_eq!(open["closeDate"], "2025-06-30", "open: estimatedclosedate");
    let filtered = Sim::find(&state, "opportunities", "externalOpportunityId", &opp(4)).unwrap();
    assert_eq!(
        filtered["externalCompanyId"],
        Value::Null,
        "account filtered out: empty company"
    );
    assert!(
        Sim::find(&state, "opportunities", "externalOpportunityId", &opp(6)).is_none(),
        "filtered opportunity"
    );

    let company = Sim::find(&state, "companies", "externalCompanyId", FABRIKAM).unwrap();
    assert_eq!(company["company"], "Fabrikam Inc");
    assert_eq!(company["industry"], "Consulting");
    assert_eq!(company["billingCity"], "Redmond");
    assert_eq!(company["numberOfEmployees"], 250);
    assert_eq!(
        state["companies"].as_array().unwrap().len(),
        2,
        "Filtered Co gets no company"
    );

    let leads = state["leads"].as_array().unwrap();
    let ana: Vec<&Value> = leads
        .iter()
        .filter(|l| {
            l["email"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("ana.ruiz@example.com")
        })
        .collect();
    assert_eq!(
        ana.len(),
        1,
        "two contacts whose emails differ in case are one lead"
    );
    assert_eq!(ana[0]["externalCompanyId"], FABRIKAM);
    assert_eq!(leads.len(), 3);

    let roles = state["roles"].as_array().unwrap();
    let customer = roles
        .iter()
        .find(|r| r["externalOpportunityId"] == json!(opp(2)))
        .unwrap();
    assert_eq!(
        (customer["role"].clone(), customer["isPrimary"].clone()),
        (json!("Customer"), json!(true))
    );
    assert_eq!(customer["leadId"], ana[0]["id"]);
    assert_eq!(roles.len(), 6);
    assert_eq!(db.count("SELECT count(*) FROM mkto_ack"), 18);

    // Owners, as Adobe's recipe for non-native integrations has them: the users who own an
    // exported record are sales persons, sent first; each record names its owner.
    let persons = state["sales_persons"].as_array().unwrap();
    let mut names: Vec<&str> = persons
        .iter()
        .map(|p| p["lastName"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Rossi", "Seller"], "the idle admin owns nothing");
    let dana = Sim::find(&state, "sales_persons", "externalSalesPersonId", DANA).unwrap();
    assert_eq!(dana["email"], "dana.seller@contoso.example");
    assert_eq!(dana["mobilePhone"], "+1 425 555 0101");
    assert_eq!(won["externalSalesPersonId"], DANA);
    assert_eq!(company["externalSalesPersonId"], DANA);
    let northwind = Sim::find(&state, "opportunities", "externalOpportunityId", &opp(3)).unwrap();
    assert_eq!(
        northwind["externalSalesPersonId"], MARCO,
        "a disabled owner still links"
    );
    assert_eq!(
        northwind["amount"], 97200.0,
        "90,000 EUR in the base currency (USD)"
    );
    assert_eq!(
        lost["externalSalesPersonId"],
        Value::Null,
        "a team owner is no sales person"
    );
    assert_eq!(ana[0]["externalSalesPersonId"], DANA);
    assert!(
        ana[0]["externalPersonId"]
            .as_str()
            .unwrap()
            .starts_with("5d2e9f10-"),
        "externalPersonId is the contactid"
    );
    let sends: Vec<String> =
        db.column("SELECT path FROM api_call WHERE method = 'POST' ORDER BY call_id");
    assert_eq!(
        sends[0], "/rest/v1/salespersons.json",
        "sales persons go first: {sends:?}"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM api_call WHERE method = 'GET' AND path LIKE '%/describe.json'"
        ),
        5,
        "each object is described once, before anything is sent"
    );
}

#[test]
fn changes_are_sent_in_order_and_a_second_push_makes_no_call() {
    let (db, sim) = pushed_then_changed();
    let first_calls = db.count("SELECT count(*) FROM api_call");
    push(&db, &sim).expect_code(0);
    let paths = db.column("SELECT path FROM api_call ORDER BY call_id");
    let order: Vec<&str> = paths
        .iter()
        .skip(first_calls as usize)
        .map(String::as_str)
        .filter(|p| p.starts_with("/rest") && !p.ends_with("/describe.json"))
        .collect();
    assert_eq!(
        order,
        [
            "/rest/v1/leads.json",
            "/rest/v1/opportunities.json",
            "/rest/v1/opportunities/roles.json",
            "/rest/v1/opportunities/roles/delete.json",
            "/rest/v1/opportunities/delete.json"
        ]
    );
    let state = sim.state();
    assert!(
        Sim::find(&state, "opportunities", "externalOpportunityId", &opp(5)).is_none(),
        "deleted in Dynamics"
    );
    assert_eq!(
        Sim::find(&state, "opportunities", "externalOpportunityId", &opp(1)).unwrap()["amount"],
        310000.0
    );
    let o3_roles: Vec<&str> = state["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["externalOpportunityId"] == json!(opp(3)))
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        o3_roles,
        ["Decision Maker"],
        "a renamed role is created and the old one deleted"
    );
    assert!(
        !state["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["role"] == "Technical Buyer" && r["externalOpportunityId"] == json!(opp(1))),
        "a removed stakeholder's role is deleted"
    );

    let explained = db.run(&["explain", &opp(5), "--json"]);
    explained.expect_code(0);
    let explained: Value = serde_json::from_str(&explained.stdout).unwrap();
    let last: Vec<(String, String)> = explained["last_push"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["object"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        last,
        [
            ("opportunity".to_string(), "deleted".to_string()),
            ("opportunity_role".to_string(), "deleted".to_string())
        ]
    );

    let rest_calls = state["rest_calls"].as_u64().unwrap();
    let run = push(&db, &sim);
    run.expect_code(0); // the contact without an email stands since the first push
    assert!(run.stdout.contains("no REST call made"), "{}", run.stdout);
    assert_eq!(sim.state()["rest_calls"].as_u64().unwrap(), rest_calls);
}

#[test]
fn a_record_that_cannot_be_sent_is_reported_once_and_closes_when_it_can_be_sent() {
    const MENDED: &str = "5d2e9f10-2c44-ef11-a316-000d3a5c0005"; // given an email
    const BROKEN: &str = "5d2e9f10-2c44-ef11-a316-000d3a5c0002"; // loses theirs
    // A new problem: exit 3, and the contact's lead listed.
    let reports_new = |run: &Run, contact: &str| {
        run.expect_code(3);
        let line = format!("skipped lead {contact}: contact has no email");
        assert!(run.stderr.contains(&line), "{}", run.stderr);
    };
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    reports_new(&push(&db, &sim), MENDED);
    // Standing: counted, not listed again, not recorded again.
    let again = push(&db, &sim);
    again.expect_code(0);
    assert!(!again.stderr.contains("skipped lead"), "{}", again.stderr);
    assert!(again.stdout.contains("no new problem"), "{}", again.stdout);
    let counts: Value = serde_json::from_str(
        &db.column("SELECT counts FROM run WHERE command = 'push' ORDER BY run_id DESC LIMIT 1")[0],
    )
    .unwrap();
    assert_eq!(counts["skipped_total"], 2, "{counts}");
    assert_eq!(counts["skipped"], json!([]), "{counts}");
    let not_sent = |key: &str| {
        db.count(&format!(
            "SELECT count(*) FROM push_outcome WHERE status = 'not_sent' AND key = '{key}'"
        ))
    };
    assert_eq!(not_sent(MENDED), 1, "recorded by the first push only");

    let open = |key: &str| {
        db.column(&format!(
            "SELECT p.subject || ': ' || p.reason FROM problem p
             WHERE p.resolved_run IS NULL AND (p.key = '{key}' OR p.key IN (
                 SELECT coalesce(e.key, e.source_id) FROM export_row e
                 JOIN opportunity_contact_role r ON r.source_id = e.source_id
                 WHERE e.object = 'opportunity_role' AND r.contactid = '{key}'))
             ORDER BY 1"
        ))
    };
    assert_eq!(
        open(MENDED),
        [
            "lead: contact has no email",
            "opportunity_role: contact has no email, so it has no lead"
        ]
    );
    assert!(open(BROKEN).is_empty());

    db.run(&[
        "pull",
        "--fixtures",
        &fixtures().join("unsendable").to_string_lossy(),
    ])
    .expect_code(0);
    let traded = push(&db, &sim);
    reports_new(&traded, BROKEN);
    assert!(!traded.stderr.contains(MENDED), "{}", traded.stderr);
    assert!(
        open(MENDED).is_empty(),
        "its lead and role went: {:?}",
        open(MENDED)
    );
    assert!(Sim::find(&sim.state(), "leads", "email", "noemail.person@example.com").is_some());
    assert_eq!(
        open(BROKEN),
        [
            "lead: contact has no email",
            "opportunity_role: contact has no email, so it has no lead"
        ]
    );
    push(&db, &sim).expect_code(0);
    assert_eq!(not_sent(BROKEN), 1);
}

#[test]
fn plan_lists_the_first_twenty_skipped_records_and_plan_json_every_one() {
    let db = pulled("1-initial");
    // 25 more leads without an email, stored as a refresh stores them: plan reads them as is.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    for i in 0..25 {
        conn.execute(
            "INSERT INTO export_row (object, root, key, source_id, payload, skip_reason)
             VALUES ('lead', ?1, NULL, ?1, NULL, 'contact has no email')",
            [format!("00000000-0000-4000-8000-{i:012}")],
        )
        .unwrap();
    }
    drop(conn);
    let human = db.run(&["plan"]);
    human.expect_code(0);
    let listed: Vec<&str> = human
        .stdout
        .lines()
        .filter(|l| l.starts_with("skip "))
        .collect();
    assert_eq!(listed.len(), 20, "{}", human.stdout);
    assert_eq!(
        listed[0],
        "skip lead 00000000-0000-4000-8000-000000000000: contact has no email"
    );
    assert!(
        human
            .stdout
            .contains("skip: 7 more; `oppsync plan --json` lists every one"),
        "{}",
        human.stdout
    );
    let plan: Value = serde_json::from_str(&db.run(&["plan", "--json"]).stdout).unwrap();
    let skipped = plan["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 27);
    assert_eq!(plan["objects"]["lead"]["skip"], 26);
    assert_eq!(
        skipped.last().unwrap()["object"],
        "opportunity_role",
        "object by object, in push order"
    );
}

#[test]
fn exit_3_means_a_new_problem_and_status_lists_the_standing_ones() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    push(&db, &sim).expect_code(3); // the contact without an email, seen first
    push(&db, &sim).expect_code(0); // the same problem stands: nothing new
    sim.fault(json!({"record_code": "1003", "path": "opportunities.json"}));
    pull_changes(&db);
    let run = push(&db, &sim);
    run.expect_code(3); // a record Marketo refused: new
    assert!(run.stderr.contains("1003"), "{}", run.stderr);
    let status: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
    let problems = status["problems"].as_array().unwrap();
    assert_eq!(status["problems_total"], problems.len());
    let no_email = problems
        .iter()
        .find(|p| p["reason"] == "contact has no email")
        .unwrap();
    assert_eq!(
        no_email["first_run"], 2,
        "first seen by the first push: {no_email}"
    );
    assert_eq!(
        (&no_email["last_run"], &no_email["unsendable"]),
        (&json!(2), &json!(true)),
        "a record that cannot be sent is checked again only when its rows change: {no_email}"
    );
    let refused = problems
        .iter()
        .find(|p| p["reason"].as_str().unwrap().contains("1003"))
        .unwrap();
    assert_eq!(
        refused["unsendable"], false,
        "seen by the push that sent it"
    );
    let human = db.run(&["status"]).stdout;
    assert!(
        human.contains("contact has no email (first seen ")
            && human.contains("stands while its records do not change, last checked by run 2)"),
        "{human}"
    );
    // Held back, as sent unchanged it would be refused again: the problem stands, counted but
    // not listed again.
    let again = push(&db, &sim);
    again.expect_code(0);
    assert!(!again.stderr.contains("1003"), "{}", again.stderr);
    assert!(again.stdout.contains("no new problem"), "{}", again.stdout);
    // Sent again when asked (the fault is gone), the refused record goes: its problem closes.
    push_with(&db, &sim, &[("MARKETO_RETRY_REFUSED_HOURS", "0")]).expect_code(0);
    let status: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
    assert!(
        !status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["reason"].as_str().unwrap().contains("1003")),
        "{status}"
    );
    let human = db.run(&["status"]);
    assert!(
        human.stdout.contains("standing problems: 2"),
        "{}",
        human.stdout
    );
}

#[test]
fn transient_faults_and_token_expiry_are_retried() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    sim.fault(json!([
        {"code": "606", "path": "companies"},
        {"code": "615", "path": "companies"},
        {"code": "604", "path": "leads"},
        {"http": 502, "path": "leads"},
        {"code": "608", "path": "opportunities.json"},
        {"code": "611", "path": "opportunities.json"},
        {"code": "602", "path": "roles"},
        {"code": "713", "path": "roles"},
        {"code": "502", "path": "roles"},
        {"http": 503, "path": "roles"}
    ]));
    push(&db, &sim).expect_code(3);
    let codes =
        db.column("SELECT coalesce(error_code, http_status) FROM api_call ORDER BY call_id");
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    for wanted in [
        "606", "615", "604", "502", "608", "611", "602", "713", "503",
    ] {
        assert!(codes.contains(&wanted), "{wanted} missing from {codes:?}");
    }
    let identity = db.count("SELECT count(*) FROM api_call WHERE path = '/identity/oauth/token'");
    assert_eq!(identity, 2, "a 602 fetches a new token once");
    assert_eq!(sim.state()["roles"].as_array().unwrap().len(), 6);
    assert_eq!(db.count("SELECT count(*) FROM mkto_ack"), 18);
}

#[test]
fn an_unexpected_error_aborts_with_its_code_and_keeps_what_was_acknowledged() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    sim.fault(json!({"code": "603", "path": "opportunities.json"}));
    let run = push(&db, &sim);
    run.expect_code(1);
    assert!(run.stderr.contains("603"), "{}", run.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object IN ('company', 'lead')"),
        5
    );
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'opportunity'"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM run WHERE command = 'push' AND outcome = 'failed'"),
        1
    );
}

#[test]
fn the_daily_quota_stops_the_run_and_the_next_run_resumes() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    sim.fault(json!({"code": "607", "path": "opportunities.json"}));
    let run = push(&db, &sim);
    run.expect_code(1);
    assert!(
        run.stderr.contains("daily API quota is spent"),
        "{}",
        run.stderr
    );
    let before = db.count("SELECT count(*) FROM api_call");
    push(&db, &sim).expect_code(3);
    let resumed: Vec<String> = db
        .column("SELECT path FROM api_call ORDER BY call_id")
        .into_iter()
        .skip(before as usize)
        .filter(|p| p.starts_with("/rest") && !p.ends_with("/describe.json"))
        .collect();
    assert_eq!(
        resumed,
        [
            "/rest/v1/opportunities.json",
            "/rest/v1/opportunities/roles.json"
        ],
        "companies and leads are not sent again"
    );
    assert_eq!(sim.state()["opportunities"].as_array().unwrap().len(), 5);
}

#[test]
fn a_spent_quota_at_marketo_gives_607_too() {
    let db = pulled("1-initial");
    let sim = Sim::start(&["--daily-quota", "2"]);
    let run = push(&db, &sim);
    run.expect_code(1);
    assert!(run.stderr.contains("607"), "{}", run.stderr);
}

#[test]
fn record_level_skips_are_listed_stored_held_back_and_exit_3() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    sim.fault(json!({"record_code": "1003", "path": "leads.json"}));
    let run = push(&db, &sim);
    run.expect_code(3);
    assert!(
        run.stderr.contains("1003 Injected record-level fault"),
        "{}",
        run.stderr
    );
    let skipped_lead = db.count("SELECT count(*) FROM push_outcome WHERE object = 'lead' AND status = 'skipped' AND reasons LIKE '%1003%'");
    assert_eq!(skipped_lead, 1);
    let unsent_roles = db.count("SELECT count(*) FROM push_outcome WHERE object = 'opportunity_role' AND status = 'not_sent' AND reasons LIKE '%is not in Marketo%'");
    assert!(unsent_roles >= 1, "the skipped lead's roles cannot be sent");
    // The next push holds the refused lead back: sent unchanged it would be refused again.
    let leads_calls = |db: &TestDb| calls_to(db, "leads.json");
    let before = leads_calls(&db);
    let outcomes = db.count("SELECT count(*) FROM push_outcome");
    let held = push(&db, &sim);
    held.expect_code(0);
    assert_eq!(leads_calls(&db), before, "no lead sent: {}", held.stdout);
    // Its roles wait with it: neither read as not sent nor recorded again.
    assert_eq!(
        db.count("SELECT count(*) FROM push_outcome"),
        outcomes,
        "nothing recorded again: {}",
        held.stdout
    );
    assert_eq!(
        db.count("SELECT count(*) FROM problem WHERE resolved_run IS NULL AND subject = 'opportunity_role' AND reason LIKE '%is not in Marketo'"),
        unsent_roles,
        "the roles' problems stand"
    );
    assert!(!held.stderr.contains("1003"), "standing: {}", held.stderr);
    let counts =
        &db.column("SELECT counts FROM run WHERE command = 'push' ORDER BY run_id DESC LIMIT 1")[0];
    assert!(
        !counts.contains("1003"),
        "not stored again each push: {counts}"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM problem WHERE resolved_run IS NULL AND reason LIKE '%1003%'"
        ),
        1,
        "it stands"
    );
    let plan = db.run(&["plan"]).stdout;
    assert!(
        plan.contains("Marketo refused this record at ")
            && plan.contains("1003 Injected record-level fault (sent again when it changes"),
        "{plan}"
    );
    assert!(
        plan.contains("is not in Marketo: Marketo refused it at ")
            && plan.contains("(the role goes once it is in Marketo)"),
        "{plan}"
    );
    // Asked to retry at once, it sends the lead, then its roles.
    push_with(&db, &sim, &[("MARKETO_RETRY_REFUSED_HOURS", "0")]).expect_code(0);
    assert_eq!(leads_calls(&db), before + 1);
    assert_eq!(sim.state()["roles"].as_array().unwrap().len(), 6);
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_refused"),
        0,
        "acknowledged"
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM problem WHERE resolved_run IS NULL AND (reason LIKE '%1003%' OR reason LIKE '%is not in Marketo')"
        ),
        0
    );
}

#[test]
fn a_push_killed_midway_converges_on_rerun_without_duplicate_leads() {
    let mut closed = 0;
    for delay_ms in [150, 450] {
        let db = pulled("1-initial");
        let sim = Sim::start(&["--latency-ms", "200"]);
        let mut child = spawn_push(&db, &sim);
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Killed after recording its run (it has at once, but on a machine slow enough to
        // start it late, nothing is left to close).
        let running = "SELECT count(*) FROM run WHERE command = 'push' AND outcome = 'running'";
        let killed = db.count(running);
        push(&db, &sim).expect_code(3);
        // The rerun closed the killed run's row, so that sqlite3 reads what happened too.
        assert_eq!(db.count(running), 0);
        assert_eq!(
            db.count(
                "SELECT count(*) FROM run WHERE command = 'push' AND outcome = 'interrupted'
                   AND finished_at IS NULL AND exit_code IS NULL
                   AND message LIKE 'its process stopped before recording an outcome%'"
            ),
            killed
        );
        closed += killed;
        let state = sim.state();
        assert_eq!(
            state["leads"].as_array().unwrap().len(),
            3,
            "killed after {delay_ms} ms"
        );
        assert_eq!(state["opportunities"].as_array().unwrap().len(), 5);
        assert_eq!(state["roles"].as_array().unwrap().len(), 6);
        let calls = state["rest_calls"].as_u64().unwrap();
        assert!(push(&db, &sim).stdout.contains("no REST call made"));
        assert_eq!(sim.state()["rest_calls"].as_u64().unwrap(), calls);
    }
    assert!(closed > 0, "no killed push had recorded its run yet");
}

/// `plan --json` with the Marketo settings of `sim` (whose describes push stored are counted).
fn plan_json(db: &TestDb, sim: &Sim, extra: &[(&str, &str)]) -> Value {
    let mut env = vec![
        ("MARKETO_BASE_URL", sim.url.as_str()),
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
    ];
    env.extend_from_slice(extra);
    let run = db.run_with_env(&["plan", "--json"], &env);
    run.expect_code(0);
    serde_json::from_str(&run.stdout).unwrap()
}

fn rest_calls(sim: &Sim) -> u64 {
    sim.state()["rest_calls"].as_u64().unwrap()
}

#[test]
fn plan_counts_the_calls_push_makes_and_a_stored_describe_saves_its_call_for_a_day() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    let plan = plan_json(&db, &sim, &[]);
    assert_eq!(plan["objects"]["opportunity"]["create"], 5);
    assert_eq!(plan["objects"]["lead"]["skip"], 1);
    assert_eq!(plan["objects"]["sales_person"]["create"], 2);
    assert_eq!(plan["skipped"][0]["reason"], "contact has no email");
    assert_eq!(plan["calls"]["describes"], 5, "{plan}");
    assert_eq!(plan["total_calls"], 10);
    push(&db, &sim).expect_code(3);
    assert_eq!(json!(rest_calls(&sim)), plan["total_calls"]);
    assert_eq!(db.count("SELECT count(*) FROM marketo_describe"), 5);

    pull_changes(&db);
    // Leads, opportunities and roles to send, each checked against the describe stored above.
    let plan = plan_json(&db, &sim, &[]);
    assert_eq!(plan["calls"].get("describes"), None, "{plan}");
    assert_eq!(plan["total_calls"], 5);
    let zero = plan_json(&db, &sim, &[("MARKETO_DESCRIBE_MAX_AGE_HOURS", "0")]);
    assert_eq!(zero["calls"]["describes"], 3, "{zero}");
    // Another instance or API user has no describe stored.
    let other = db.run_with_env(
        &["plan", "--json"],
        &[
            ("MARKETO_BASE_URL", sim.url.as_str()),
            ("MARKETO_CLIENT_ID", "another-api-user"),
        ],
    );
    let other: Value = serde_json::from_str(&other.stdout).unwrap();
    assert_eq!(other["calls"]["describes"], 3, "{other}");
    // A describe older than describe_max_age_hours (24) is read again.
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE marketo_describe SET described_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-25 hours')
             WHERE object = 'lead'",
            [],
        )
        .unwrap();
    let plan = plan_json(&db, &sim, &[]);
    assert_eq!(plan["calls"]["describes"], 1, "{plan}");
    assert_eq!(plan["total_calls"], 6);
    // A stored describe that lacks a field to send is read again, never trusted to refuse it.
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE marketo_describe SET fields = json_remove(fields, '$.description')
             WHERE object = 'opportunity'",
            [],
        )
        .unwrap();
    let plan = plan_json(&db, &sim, &[]);
    assert_eq!(plan["calls"]["describes"], 2, "{plan}");
    assert_eq!(plan["total_calls"], 7);

    let before = rest_calls(&sim);
    let run = db.run_with_env(
        &["-v", "push"],
        &[
            ("MARKETO_BASE_URL", &sim.url),
            ("MARKETO_CLIENT_ID", "oppsync-sim"),
            ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
        ],
    );
    run.expect_code(0);
    assert_eq!(json!(rest_calls(&sim) - before), plan["total_calls"]);
    assert_eq!(
        db.column(
            "SELECT path FROM api_call WHERE path LIKE '%describe%' AND run_id = (SELECT max(run_id) FROM run)"
        ),
        [
            "/rest/v1/leads/describe.json",
            "/rest/v1/opportunities/describe.json"
        ]
    );
    assert!(
        run.stdout
            .contains("roles: fields checked against Marketo's describe of"),
        "{}",
        run.stdout
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM marketo_describe WHERE described_at > strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour')"
        ),
        5
    );
}

#[test]
fn a_field_deleted_in_marketo_after_its_describe_was_stored_stops_the_push_that_trusted_it() {
    let (db, sim) = pushed_then_changed();
    // An administrator deletes a field every opportunity carries.
    sim.post(
        "/sim/fields",
        &json!({"object": "opportunity", "remove": ["description"]}),
    );
    let run = push(&db, &sim);
    run.expect_code(1);
    assert!(
        run.stderr.contains(
            "Marketo skipped 2 opportunities with 1006 (field not found), though its describe of"
        ) && run
            .stderr
            .contains("push again to describe opportunities first"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM marketo_describe WHERE object = 'opportunity'"),
        0,
        "forgotten"
    );
    // Nothing after the opportunities went: no role, no delete.
    let last_run = "(SELECT max(run_id) FROM run)";
    assert_eq!(
        db.column(&format!(
            "SELECT path FROM api_call WHERE run_id = {last_run} AND path LIKE '/rest/%' ORDER BY call_id"
        )),
        ["/rest/v1/leads.json", "/rest/v1/opportunities.json"]
    );

    // The next push describes opportunities first and names the field, sending nothing.
    let run = push(&db, &sim);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("Marketo's opportunities have no field description"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.column(&format!(
            "SELECT path FROM api_call WHERE run_id = {last_run} AND path LIKE '/rest/%' ORDER BY call_id"
        )),
        ["/rest/v1/opportunities/describe.json"]
    );

    // Restored, the same push goes through, with one describe.
    sim.post(
        "/sim/fields",
        &json!({"object": "opportunity", "restore": ["description"]}),
    );
    push(&db, &sim).expect_code(0);
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM api_call WHERE run_id = {last_run} AND path LIKE '%describe.json'"
        )),
        1
    );
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
}

#[test]
fn secrets_reach_neither_the_database_nor_the_output() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    let wrong = "wrong-secret-4f1d9a";
    let run = db.run_with_env(
        &["push"],
        &[
            ("MARKETO_BASE_URL", &sim.url),
            ("MARKETO_CLIENT_ID", "oppsync-sim"),
            ("MARKETO_CLIENT_SECRET", wrong),
        ],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("Marketo refused the credentials"),
        "{}",
        run.stderr
    );
    push(&db, &sim).expect_code(3);
    for secret in [wrong, "oppsync-sim-secret"] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
        for suffix in ["", "-wal"] {
            let path = format!("{}{suffix}", db.path().display());
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {path}"
            );
        }
    }
}

#[test]
fn keep_leaves_deleted_opportunities_and_their_roles_in_marketo() {
    let db = pulled("1-initial");
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[marketo]\nretry_base_ms = 5\non_opportunity_delete = \"keep\"\n",
    )
    .unwrap();
    let sim = Sim::start(&[]);
    push(&db, &sim).expect_code(3);
    pull_changes(&db);
    push(&db, &sim).expect_code(0);
    let state = sim.state();
    assert!(
        Sim::find(&state, "opportunities", "externalOpportunityId", &opp(5)).is_some(),
        "kept"
    );
    assert!(
        state["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["externalOpportunityId"] == json!(opp(5))),
        "its role is kept too"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE path LIKE '%opportunities/delete.json'"),
        0
    );
}

#[test]
fn dry_run_lists_the_batches_and_sends_nothing() {
    let db = pulled("1-initial");
    let run = db.run(&["push", "--dry-run"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("would send opportunities upsert (createOrUpdate): 5 records"),
        "{}",
        run.stdout
    );
    // No describe is stored yet: the five objects are described first.
    assert!(
        run.stdout.contains(
            "would describe opportunities first (/rest/v1/opportunities/describe.json): no describe of them is stored"
        ) && run.stdout.contains("10 REST calls; 2 records would be skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(db.count("SELECT count(*) FROM api_call"), 0);
    assert_eq!(db.count("SELECT count(*) FROM mkto_ack"), 0);
}

#[test]
fn mapped_fields_are_sent_and_a_new_mapping_updates_marketo() {
    let (db, sim) = pushed();
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[marketo]\nretry_base_ms = 5\n\
         [mapping.opportunity]\nexpectedRevenue = \"estimatedvalue\"\nnextStep = \"stepname\"\n\
         [mapping.company]\nsicCode = \"accountnumber\"\n\
         [mapping.lead]\ncompany = \"fullname\"\n",
    )
    .unwrap();
    let plan: Value = serde_json::from_str(&db.run(&["plan", "--json"]).stdout).unwrap();
    assert_eq!(plan["objects"]["opportunity"]["update"], 5, "{plan}");
    assert_eq!(plan["objects"]["company"]["update"], 2, "{plan}");
    assert_eq!(plan["objects"]["lead"]["update"], 3, "{plan}");
    push(&db, &sim).expect_code(0);
    let state = sim.state();
    let open = Sim::find(&state, "opportunities", "externalOpportunityId", &opp(1)).unwrap();
    assert_eq!(open["expectedRevenue"], 250000.0);
    assert_eq!(open["nextStep"], "3-Propose");
    assert_eq!(
        open["name"], "Fabrikam - 200 licences",
        "default fields are still sent"
    );
    assert_eq!(
        Sim::find(&state, "companies", "externalCompanyId", FABRIKAM).unwrap()["sicCode"],
        "ACC-0001"
    );
    assert!(
        state["leads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["company"] == "Li Wei")
    );
    assert!(push(&db, &sim).stdout.contains("no REST call made"));

    // A field the Marketo instance does not have is refused before anything is sent: the
    // describe at the start of the push names it.
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[marketo]\nretry_base_ms = 5\n[mapping.opportunity]\ncolour = \"name\"\n",
    )
    .unwrap();
    let posts = |db: &TestDb| db.count("SELECT count(*) FROM api_call WHERE method = 'POST'");
    let before = posts(&db);
    let run = push(&db, &sim);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("Marketo's opportunities have no field colour"),
        "{}",
        run.stderr
    );
    assert_eq!(posts(&db), before, "nothing sent");
}

#[test]
fn a_record_whose_sales_person_marketo_lacks_gets_718_and_the_next_push_repairs_it() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    // Marketo fails to create the first sales person (1014, nothing held back for it), so the
    // records it owns name a stranger.
    sim.fault(json!({"record_code": "1014", "path": "salespersons.json"}));
    let run = push(&db, &sim);
    run.expect_code(3);
    assert!(
        run.stderr.contains("718 ExternalSalesPersonID not found"),
        "{}",
        run.stderr
    );
    assert!(db.count("SELECT count(*) FROM push_outcome WHERE reasons LIKE '%718%'") > 0);
    assert!(db.count("SELECT count(*) FROM mkto_ack") < 18);
    let run = push(&db, &sim);
    run.expect_code(0); // the demo's contact without an email stands: nothing new
    assert!(!run.stderr.contains("718"), "{}", run.stderr);
    assert_eq!(db.count("SELECT count(*) FROM mkto_ack"), 18);
    assert_eq!(sim.state()["sales_persons"].as_array().unwrap().len(), 2);
}

#[test]
fn an_instance_with_native_crm_sync_stops_the_push_with_exit_2_and_says_so() {
    let db = pulled("1-initial");
    let sim = Sim::start(&["--native-crm-sync"]);
    let run = push(&db, &sim);
    run.expect_code(2);
    assert!(run.stderr.contains("native CRM sync"), "{}", run.stderr);
    assert!(run.stderr.contains("1018"), "{}", run.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE method = 'POST'"),
        0,
        "nothing sent"
    );
    assert_eq!(db.count("SELECT count(*) FROM mkto_ack"), 0);
    let state = sim.state();
    assert!(state["leads"].as_array().unwrap().is_empty());
}

/// A folder of `n` opportunities, each with its own customer account (no contacts): enough
/// records for several batches of each object.
fn many_opportunities(dir: &std::path::Path, n: usize) {
    let guid = |prefix: u32, i: usize| format!("{prefix:08x}-0000-4000-8000-{i:012x}");
    let accounts: Vec<Value> = (0..n)
        .map(|i| json!({"accountid": guid(0xa, i), "name": format!("Account {i}")}))
        .collect();
    let opportunities: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "opportunityid": guid(0xf, i),
                "name": format!("Opportunity {i}"),
                "statecode": 0,
                "estimatedvalue_base": 1000.0,
                "_customerid_value": guid(0xa, i),
                "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account"
            })
        })
        .collect();
    for (set, records) in [("accounts", accounts), ("opportunities", opportunities)] {
        let page = json!({
            "@odata.context": format!("https://contoso.crm.dynamics.com/api/data/v9.2/$metadata#{set}"),
            "value": records
        });
        std::fs::write(dir.join(format!("{set}.json")), page.to_string()).unwrap();
    }
}

#[test]
fn several_requests_are_kept_in_flight_within_marketo_s_limits() {
    let n = 1300; // five batches of companies, five of opportunities
    for (in_flight, peak) in [(1, 1..=1), (4, 2..=4)] {
        let db = TestDb::new();
        std::fs::write(
            db.dir.path().join("oppsync.toml"),
            format!("[marketo]\nretry_base_ms = 5\nmax_in_flight = {in_flight}\n"),
        )
        .unwrap();
        let pages = db.dir.path().join("pages");
        std::fs::create_dir(&pages).unwrap();
        many_opportunities(&pages, n);
        db.run(&["pull", "--fixtures", pages.to_str().unwrap()])
            .expect_code(0);
        let sim = Sim::start(&["--latency-ms", "100"]);
        push(&db, &sim).expect_code(0);
        let state = sim.state();
        let seen = state["in_flight_peak"].as_u64().unwrap();
        assert!(
            peak.contains(&seen),
            "max_in_flight {in_flight}: peak {seen}"
        );
        assert_eq!(state["refused_606"], 0);
        assert_eq!(state["refused_615"], 0);
        assert_eq!(
            db.count("SELECT count(*) FROM mkto_ack"),
            2 * n as i64,
            "every company and opportunity acknowledged"
        );
        assert_eq!(state["opportunities"].as_array().unwrap().len(), n);
    }
}

#[test]
fn pull_push_and_sync_json_print_exactly_one_result_object() {
    let db = pulled("1-initial");
    let dir = fixtures().join("demo").join("2-changes");
    let parse = |run: &Run| -> Value {
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stdout: {}", run.stdout);
        serde_json::from_str(lines[0]).unwrap()
    };
    let run = db.run(&["pull", "--json", "--fixtures", dir.to_str().unwrap()]);
    run.expect_code(0);
    let pulled = parse(&run);
    assert_eq!(pulled["command"], "pull");
    assert_eq!(pulled["outcome"], "done");
    assert_eq!(pulled["exit_code"], 0);
    assert!(pulled["counts"]["pages"].as_u64().unwrap() >= 2, "{pulled}");
    assert!(
        run.stderr.contains("staged"),
        "progress goes to stderr: {}",
        run.stderr
    );

    let sim = Sim::start(&[]);
    let env = [
        ("MARKETO_BASE_URL", sim.url.as_str()),
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
    ];
    let run = db.run_with_env(&["push", "--json"], &env);
    run.expect_code(3);
    let pushed = parse(&run);
    assert_eq!(pushed["outcome"], "done_with_rejects");
    assert_eq!(pushed["exit_code"], 3);
    assert!(pushed["rest_calls"].as_u64().unwrap() > 5, "{pushed}");
    assert!(pushed["counts"]["created"]["opportunity"].as_u64().unwrap() > 0);
    assert_eq!(pushed["run_id"], db.count("SELECT max(run_id) FROM run"));

    let run = db.run_with_env(
        &["sync", "--json", "--fixtures", dir.to_str().unwrap()],
        &[("MARKETO_BASE_URL", "http://marketo.example.invalid")],
    );
    run.expect_code(2);
    let failed = parse(&run);
    assert_eq!(failed["outcome"], "usage_error");
    assert!(
        failed["message"].as_str().unwrap().contains("marketo"),
        "{failed}"
    );
    assert!(run.stderr.contains("error:"), "{}", run.stderr);
}

#[test]
fn status_shows_a_push_in_progress_as_running_with_its_pid_and_progress() {
    let db = pulled("1-initial");
    let sim = Sim::start(&["--latency-ms", "300"]);
    let mut child = spawn_push(&db, &sim);
    // Poll (bounded) until the push has made calls, then look at it from another process.
    let mut running = Value::Null;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let status: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
        running = status["runs"][0].clone();
        if running["progress"]["rest_calls"].as_i64().unwrap_or(0) > 0 {
            break;
        }
    }
    assert_eq!(running["outcome"], "running", "{running}");
    assert_eq!(running["pid"], child.id(), "{running}");
    assert!(
        running["progress"]["rest_calls"].as_i64().unwrap() > 0,
        "{running}"
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let after: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(after["runs"][0]["outcome"], "done_with_rejects");
    assert_eq!(after["runs"][0]["pid"], Value::Null);
    assert_eq!(after["last_success"]["command"], "push");
    assert_eq!(
        after["lag"]["newest_staged"], after["lag"]["newest_acknowledged"],
        "{after}"
    );
}

#[test]
fn off_a_terminal_every_line_is_stamped_and_waits_show_with_v() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    sim.fault(json!({"code": "604", "path": "companies.json"}));
    let run = db.run_with_env(
        &["-v", "push"],
        &[
            ("MARKETO_BASE_URL", sim.url.as_str()),
            ("MARKETO_CLIENT_ID", "oppsync-sim"),
            ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
        ],
    );
    run.expect_code(3);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() >= 5, "{}", run.stdout);
    // The records skipped for a new problem are listed on stderr, stamped too: a log under
    // systemd or cron holds both streams.
    let listed: Vec<&str> = run.stderr.lines().collect();
    assert!(
        listed.iter().any(|l| l.contains(" skipped lead ")),
        "{}",
        run.stderr
    );
    for line in lines.iter().chain(&listed) {
        let stamp = line.split(' ').next().unwrap();
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "not stamped: {line}"
        );
    }
    assert!(
        run.stdout.contains("/v1/companies.json: 604") && run.stdout.contains("retrying in"),
        "the retry shows with -v: {}",
        run.stdout
    );
    // The push's own line counts them, for a log kept without -v.
    assert!(
        run.stdout
            .contains("Marketo answered errors (604 ×1); 1 call was sent again (each call is in table api_call"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains('\u{1b}'),
        "no control codes off a terminal"
    );
}

#[test]
fn roles_of_a_lead_deleted_in_marketo_are_sent_again_with_its_new_id() {
    let (db, sim) = pushed();
    let old_id = sim.delete_lead("ana.ruiz@example.com");
    assert!(sim.roles_of(old_id).is_empty(), "Marketo deleted her roles");
    // Her job title changes in Dynamics: her lead goes again, and Marketo creates it anew.
    let dir = fixtures().join("lead-lost-in-marketo");
    db.run(&["pull", "--fixtures", dir.to_str().unwrap()])
        .expect_code(0);
    let run = push(&db, &sim);
    run.expect_code(0);
    let new_id = sim.lead_id("ana.ruiz@example.com");
    assert_ne!(new_id, old_id);
    assert!(
        run.stdout
            .contains("roles: 3 to send again, as their lead or opportunity has a new Marketo id"),
        "{}",
        run.stdout
    );
    // The plan had no role to send: they go in the same push, with her new id, after a
    // describe of roles.
    let last_push = "(SELECT max(run_id) FROM run WHERE command = 'push')";
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM api_call WHERE run_id = {last_push} AND path IN
                 ('/rest/v1/opportunities/roles/describe.json', '/rest/v1/opportunities/roles.json')"
        )),
        2
    );
    assert_eq!(
        sim.roles_of(new_id),
        [
            (
                "a7d3c2b1-2c44-ef11-a316-000d3a5c0001".to_string(),
                "Decision Maker".to_string()
            ),
            (
                "a7d3c2b1-2c44-ef11-a316-000d3a5c0002".to_string(),
                "Customer".to_string()
            ),
            (
                "a7d3c2b1-2c44-ef11-a316-000d3a5c0004".to_string(),
                "Technical Buyer".to_string()
            ),
        ]
    );
    assert_eq!(db.count("SELECT count(*) FROM mkto_moved"), 0);
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
}

#[test]
fn a_role_refused_as_its_lead_is_gone_goes_after_its_lead_is_sent_again() {
    let (db, sim) = pushed();
    let old_id = sim.delete_lead("priya.shah@example.com");
    // The changes give her a new role: Marketo refuses it, her lead being gone.
    pull_changes(&db);
    let run = push(&db, &sim);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains(&format!("1013 Lead '{old_id}' not found")),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM export_row WHERE object = 'lead' AND key = 'priya.shah@example.com' AND pending = 1"),
        1,
        "her lead is to send again"
    );
    assert_eq!(db.count("SELECT count(*) FROM mkto_refused"), 0, "not held");
    let run = push(&db, &sim);
    run.expect_code(0);
    let new_id = sim.lead_id("priya.shah@example.com");
    assert_ne!(new_id, old_id);
    assert_eq!(
        sim.roles_of(new_id),
        [(
            "a7d3c2b1-2c44-ef11-a316-000d3a5c0003".to_string(),
            "Decision Maker".to_string()
        )]
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM problem WHERE resolved_run IS NULL AND reason LIKE '%1013%'"
        ),
        0,
        "its problem closed"
    );
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
}

#[test]
fn a_role_refused_again_after_its_lead_and_opportunity_went_again_is_held_back() {
    let (db, sim) = pushed_then_changed();
    let roles_calls = |db: &TestDb| calls_to(db, "opportunities/roles.json");
    // Marketo says a role's lead or opportunity is missing, twice: the first time both go
    // again and the role with them; the second time, sending them again cannot help.
    sim.fault(json!({"record_code": "1013", "path": "opportunities/roles.json"}));
    push(&db, &sim).expect_code(3);
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE payload = ''"),
        2
    );
    sim.fault(json!({"record_code": "1013", "path": "opportunities/roles.json"}));
    push(&db, &sim).expect_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE payload = ''"),
        0,
        "lead and opportunity acknowledged again"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_refused WHERE object = 'opportunity_role' AND reason LIKE '1013%'"),
        1
    );
    let before = roles_calls(&db);
    let run = push(&db, &sim);
    run.expect_code(0);
    assert_eq!(roles_calls(&db), before, "held back: {}", run.stdout);
    // Sent again when the hold ends and refused again: held again, its lead and opportunity
    // not sent again (a 1013 that means something else costs them once, not every day).
    sim.fault(json!({"record_code": "1013", "path": "opportunities/roles.json"}));
    push_with(&db, &sim, &[("MARKETO_RETRY_REFUSED_HOURS", "0")]).expect_code(0);
    assert_eq!(roles_calls(&db), before + 1);
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE payload = ''"),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM mkto_refused"), 1);
}

#[test]
fn roles_of_an_opportunity_deleted_in_marketo_are_sent_again_when_it_is() {
    let (db, sim) = pushed();
    let opportunity = "a7d3c2b1-2c44-ef11-a316-000d3a5c0001";
    sim.delete_opportunity(opportunity);
    let roles_on = |sim: &Sim| -> Vec<String> {
        let state = sim.state();
        let mut roles: Vec<String> = state["roles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["externalOpportunityId"] == opportunity)
            .map(|r| r["role"].as_str().unwrap().to_string())
            .collect();
        roles.sort();
        roles
    };
    assert!(roles_on(&sim).is_empty(), "Marketo deleted its roles");
    // The changes update it (Marketo creates it anew) and remove Li Wei's role on it: Ana
    // Ruiz's role goes again in the same push, as the push sends roles anyway.
    pull_changes(&db);
    let run = push(&db, &sim);
    run.expect_code(0);
    assert!(
        run.stdout.contains("roles: 1 to send again"),
        "{}",
        run.stdout
    );
    assert_eq!(roles_on(&sim), ["Decision Maker"]);
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
}

#[test]
fn a_lost_lead_refused_when_sent_again_holds_its_role_back_with_it() {
    let (db, sim) = pushed();
    sim.delete_lead("priya.shah@example.com");
    pull_changes(&db);
    push(&db, &sim).expect_code(3); // her new role: 1013, her lead to send again
    let roles_calls = |db: &TestDb| calls_to(db, "opportunities/roles.json");
    // Sent again, her lead is refused for its values: the role is not sent with her old id.
    sim.fault(json!({"record_code": "1003", "path": "leads.json"}));
    let before = roles_calls(&db);
    let run = push(&db, &sim);
    run.expect_code(3);
    assert_eq!(roles_calls(&db), before, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("the lead for priya.shah@example.com is not in Marketo"),
        "{}",
        run.stderr
    );
    // Then her lead is held back, and her role waits with it: nothing sent or recorded again.
    let outcomes = db.count("SELECT count(*) FROM push_outcome");
    let run = push(&db, &sim);
    run.expect_code(0);
    assert_eq!(roles_calls(&db), before, "{}", run.stdout);
    assert_eq!(db.count("SELECT count(*) FROM push_outcome"), outcomes);
}

#[test]
fn recheck_finds_what_marketo_lost_and_the_pushes_after_send_it_again() {
    let (db, sim) = pushed();
    let recheck = |db: &TestDb| against(db, &sim, &["recheck"], &[]);
    let check = |db: &TestDb| against(db, &sim, &["check"], &[]).stdout;
    assert!(
        check(&db).contains("✓ Marketo holds what it acknowledged: all 3 leads sampled, all 5 opportunities sampled, all 2 companies sampled, all 6 roles sampled in Marketo"),
        "{}",
        check(&db)
    );
    let run = recheck(&db);
    run.expect_code(0);
    assert!(
        run.stdout.contains("leads: 3 checked, all in Marketo")
            && run
                .stdout
                .contains("opportunities: 5 checked, all in Marketo"),
        "{}",
        run.stdout
    );
    // An administrator deletes Ana Ruiz's lead and an opportunity, with their roles.
    let old_id = sim.delete_lead("ana.ruiz@example.com");
    let opportunity = "a7d3c2b1-2c44-ef11-a316-000d3a5c0005";
    sim.delete_opportunity(opportunity);
    let checked = check(&db);
    assert!(
        checked.contains("! Marketo holds what it acknowledged: 1 of 3 leads sampled are not, 1 of 5 opportunities sampled are not, all 2 companies sampled, 4 of 6 roles sampled are not in Marketo: deleted or merged there since")
            && checked.contains("fix: run `oppsync recheck` (a query call per 300 leads or companies and per 150 opportunities)"),
        "{checked}"
    );
    let run = against(&db, &sim, &["recheck", "--json"], &[]);
    run.expect_code(0);
    let result: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        result["counts"]["missing"],
        json!({"company": 0, "lead": 1, "opportunity": 1}),
        "{result}"
    );
    assert_eq!(result["rest_calls"], 3);
    assert_eq!(
        db.column("SELECT path FROM api_call WHERE run_id = (SELECT max(run_id) FROM run) AND path LIKE '/rest%' ORDER BY call_id"),
        [
            "/rest/v1/leads.json?filterType=id&filterValues=(3 values)&fields=id",
            "/rest/v1/opportunities.json?filterType=marketoGUID&filterValues=(5 values)&fields=marketoGUID",
            "/rest/v1/companies.json?filterType=id&filterValues=(2 values)&fields=id"
        ],
        "logged without the values"
    );
    // The next push creates both anew, marks their roles and sends them, with the new ids.
    let run = push(&db, &sim);
    run.expect_code(0);
    assert!(
        run.stdout.contains("roles: 4 to send again"),
        "{}",
        run.stdout
    );
    let new_id = sim.lead_id("ana.ruiz@example.com");
    assert_ne!(new_id, old_id);
    assert_eq!(sim.roles_of(new_id).len(), 3);
    let state = sim.state();
    let on_opportunity: Vec<&Value> = state["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["externalOpportunityId"] == opportunity)
        .collect();
    assert_eq!(on_opportunity.len(), 1, "{state}");
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
    assert!(
        recheck(&db)
            .stdout
            .contains("leads: 3 checked, all in Marketo")
    );
}

#[test]
fn recheck_finds_a_company_marketo_lost_and_the_push_after_sends_it_then_what_names_it() {
    let (db, sim) = pushed();
    let id = sim.delete_company(&db, FABRIKAM);
    let naming = |object: &str| {
        db.count(&format!(
            "SELECT count(*) FROM mkto_ack WHERE object = '{object}'
               AND json_extract(payload, '$.externalCompanyId') = '{FABRIKAM}'"
        ))
    };
    let (leads, opportunities) = (naming("lead"), naming("opportunity"));
    assert!(
        leads > 0 && opportunities > 0,
        "the demo's Fabrikam has both"
    );
    // `check`'s sample finds it, and names plain `recheck`.
    let checked = against(&db, &sim, &["check"], &[]).stdout;
    assert!(
        checked.contains("all 5 opportunities sampled, 1 of 2 companies sampled are not, all 6 roles sampled in Marketo")
            && checked.contains("fix: run `oppsync recheck` (")
            && checked.contains("companies with the leads and opportunities naming them"),
        "{checked}"
    );
    let run = against(&db, &sim, &["recheck"], &[]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "companies: 2 checked, 1 no longer in Marketo (the next push sends them again, then \
             the {} leads and opportunities that name them)",
            leads + opportunities
        )),
        "{}",
        run.stdout
    );
    // Their roles keep their lead and opportunity, so they do not go again.
    assert!(
        run.stdout
            .contains("1 no longer in Marketo: `oppsync push` sends them again\n"),
        "{}",
        run.stdout
    );
    // The push creates the company anew, then sends again what names it, linking it again.
    let run = push(&db, &sim);
    run.expect_code(0);
    assert!(
        run.stdout.contains("companies: 1 created, 0 updated")
            && run
                .stdout
                .contains(&format!("leads: 0 created, {leads} updated"))
            && run.stdout.contains(&format!(
                "opportunities: 0 created, {opportunities} updated"
            )),
        "{}",
        run.stdout
    );
    let state = sim.state();
    let company = Sim::find(&state, "companies", "externalCompanyId", FABRIKAM).unwrap();
    assert_ne!(company["id"], id, "created anew: {company}");
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
    assert!(
        against(&db, &sim, &["recheck"], &[])
            .stdout
            .contains("companies: 2 checked, all in Marketo")
    );
}

#[test]
fn recheck_with_roles_finds_a_role_marketo_lost_alone_and_the_push_after_sends_it_again() {
    let (db, sim) = pushed();
    // An administrator deletes one role; its lead and opportunity stay.
    let role = sim.delete_first_role();
    let key = |r: &Value| {
        (
            r["externalOpportunityId"].clone(),
            r["leadId"].clone(),
            r["role"].clone(),
        )
    };
    let held = |sim: &Sim| {
        sim.state()["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| key(r) == key(&role))
    };
    assert!(!held(&sim));
    let checked = against(&db, &sim, &["check"], &[]).stdout;
    assert!(
        checked.contains("all 5 opportunities sampled, all 2 companies sampled, 1 of 6 roles sampled are not in Marketo")
            && checked.contains("fix: run `oppsync recheck --roles`"),
        "{checked}"
    );
    // Without --roles, the lead and the opportunity are found, and the role is not asked about.
    let run = against(&db, &sim, &["recheck"], &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Marketo holds every company, lead and opportunity it acknowledged"),
        "{}",
        run.stdout
    );
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
    let run = against(&db, &sim, &["recheck", "--roles", "--json"], &[]);
    run.expect_code(0);
    let result: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        result["counts"]["missing"],
        json!({"company": 0, "lead": 0, "opportunity": 0, "opportunity_role": 1}),
        "{result}"
    );
    assert_eq!(
        result["counts"]["checked"]["opportunity_role"], 6,
        "{result}"
    );
    assert!(
        run.stderr
            .contains("1 no longer in Marketo: `oppsync push` sends them again\n"),
        "{}",
        run.stderr
    );
    assert_eq!(result["rest_calls"], 4);
    assert_eq!(
        db.column("SELECT path FROM api_call WHERE run_id = (SELECT max(run_id) FROM run) AND path LIKE '/rest%' ORDER BY call_id")[3],
        "/rest/v1/opportunities/roles.json?filterType=marketoGUID&filterValues=(6 values)&fields=marketoGUID"
    );
    assert_eq!(
        db.column("SELECT args FROM run WHERE run_id = (SELECT max(run_id) FROM run)"),
        [r#"["--roles"]"#]
    );
    // The next push sends that role alone, and Marketo holds it again.
    let run = push(&db, &sim);
    run.expect_code(0);
    assert!(held(&sim), "{}", run.stdout);
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE run_id = (SELECT max(run_id) FROM run) AND path = '/rest/v1/opportunities/roles.json'"),
        1,
        "{}",
        run.stdout
    );
    assert_eq!(
        db.count("SELECT sum(records) FROM api_call WHERE run_id = (SELECT max(run_id) FROM run) AND path = '/rest/v1/opportunities/roles.json'"),
        1
    );
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
    let run = against(&db, &sim, &["recheck", "--roles"], &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("Marketo holds every company, lead, opportunity and role it acknowledged"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_sales_person_deleted_in_marketo_is_sent_again_after_a_record_naming_it_meets_718() {
    sales_person_deleted_in_marketo(false);
}

#[test]
fn a_sales_person_deleted_in_marketo_is_sent_again_after_a_call_meets_718() {
    sales_person_deleted_in_marketo(true);
}

/// A sales person deleted in Marketo, then a company naming it sent: Marketo answers 718 for
/// the record or (`call_level`, unconfirmed which Marketo does) for the whole call.
fn sales_person_deleted_in_marketo(call_level: bool) {
    let (db, sim) = pushed();
    let person = "8c1f3e7a-2b44-ef11-a316-000d3a5c1e01";
    let company = db.column(&format!(
        "SELECT key FROM mkto_ack WHERE object = 'company'
             AND json_extract(payload, '$.externalSalesPersonId') = '{person}'"
    ))[0]
        .clone();
    // Deleted in Marketo, by another integration; then the company changes in Dynamics (here,
    // its acknowledgement set back, as `recheck` does), so the next push sends it.
    sim.delete(
        "salespersons/delete.json",
        json!({"deleteBy": "dedupeFields", "input": [{"externalSalesPersonId": person}]}),
    );
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE mkto_ack SET payload = '' WHERE object = 'company' AND key = ?1",
            [&company],
        )
        .unwrap();
    if call_level {
        sim.fault(json!({"code": "718", "count": 1, "path": "companies.json"}));
    }
    let run = push(&db, &sim);
    run.expect_code(3);
    assert!(
        run.stderr.contains(&format!("skipped company {company}")) && run.stderr.contains("718"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.column(&format!(
            "SELECT payload FROM mkto_ack WHERE object = 'sales_person' AND key = '{person}'"
        )),
        [""],
        "the sales person is marked to send again"
    );
    // The next push sends the sales person, then the company naming it.
    let run = push(&db, &sim);
    run.expect_code(0);
    let state = sim.state();
    assert!(
        Sim::find(&state, "sales_persons", "externalSalesPersonId", person).is_some(),
        "{state}"
    );
    assert_eq!(
        Sim::find(&state, "companies", "externalCompanyId", &company).unwrap()["externalSalesPersonId"],
        person
    );
    assert!(push(&db, &sim).stdout.contains("no REST call made"));
}

#[test]
fn recheck_against_an_instance_that_lacks_most_records_sets_back_nothing() {
    let db = TestDb::new();
    let pages = db.dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    many_opportunities(&pages, 400);
    db.run(&["pull", "--fixtures", pages.to_str().unwrap()])
        .expect_code(0);
    let sent_to = Sim::start(&[]);
    push(&db, &sent_to).expect_code(0);
    // Another instance (a sandbox, say): it has none of them.
    let other = Sim::start(&[]);
    let run = against(&db, &other, &["recheck"], &[]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("Marketo lacks 400 of the 400 opportunities acknowledged here")
            && run.stderr.contains("None of them was set back"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE payload = ''"),
        0
    );
    // Asked in three calls of at most 150 GUIDs, within Marketo's 8 KB URI limit.
    assert_eq!(
        db.column("SELECT records FROM api_call WHERE path LIKE '/rest/v1/opportunities.json?%' ORDER BY call_id"),
        ["150", "150", "100"]
    );
    // The instance they were sent to lacks a few: those are set back, and go again.
    for i in 0..5 {
        let id = format!("0000000f-0000-4000-8000-{i:012x}");
        sent_to.delete_opportunity(&id);
    }
    let run = against(&db, &sent_to, &["recheck"], &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("opportunities: 400 checked, 5 no longer in Marketo"),
        "{}",
        run.stdout
    );
    push(&db, &sent_to).expect_code(0);
    assert_eq!(
        sent_to.state()["opportunities"].as_array().unwrap().len(),
        400
    );
}

/// `recheck` keeps several queries in flight; an answer that lists no records stops it: the
/// queries in flight are answered and logged, no further one is sent, and nothing is set back.
#[test]
fn recheck_keeps_queries_in_flight_and_stops_at_an_answer_without_its_records() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::broken::{BrokenServer, Reply};
    let db = TestDb::new();
    let pages = db.dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    many_opportunities(&pages, 1500); // ten queries of 150
    db.run(&["pull", "--fixtures", pages.to_str().unwrap()])
        .expect_code(0);
    let sim = Sim::start(&[]);
    push(&db, &sim).expect_code(0);
    // A Marketo that takes 100 ms a query, lacks the first opportunity of each, and answers the
    // third without its list of records.
    let (queries, in_flight, peak) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        Arc::new(AtomicUsize::new(0)),
    );
    let peak_seen = peak.clone();
    let server = BrokenServer::start("127.0.0.1", move |request, _| {
        if request.path() == "/identity/oauth/token" {
            return Reply::json(
                json!({"access_token": "recheck-token-5c1e", "token_type": "bearer", "expires_in": 3599}),
            );
        }
        let asked = queries.fetch_add(1, Ordering::SeqCst);
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if asked == 2 {
            return Reply::json(json!({"requestId": "1#1", "success": true}));
        }
        let values = request
            .target
            .split('&')
            .find_map(|pair| pair.strip_prefix("filterValues="))
            .unwrap_or_default();
        let found: Vec<Value> = values
            .split(',')
            .skip(1)
            .map(|guid| json!({"marketoGUID": guid}))
            .collect();
        Reply::json(json!({"requestId": "1#2", "success": true, "result": found}))
    });
    let env = [
        ("MARKETO_BASE_URL", server.url.as_str()),
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
    ];
    let run = db.run_with_env(&["recheck"], &env);
    run.expect_code(1);
    assert!(
        run.stderr.contains("has no list of the records found"),
        "{}",
        run.stderr
    );
    // The default max_in_flight is 4.
    let peak = peak_seen.load(Ordering::SeqCst);
    assert!((2..=4).contains(&peak), "peak in flight {peak}");
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE payload = ''"),
        0
    );
    let sent = server
        .requests()
        .iter()
        .filter(|r| r.path() == "/rest/v1/opportunities.json")
        .count();
    // The server fails the third query to reach it, one of the four sent at once, which may
    // be the fourth in key order when they arrive out of order: the answers are judged in key
    // order, so the three before it may be judged first, each letting one more go (at most 7).
    assert!((3..=7).contains(&sent), "{sent} queries sent");
    let recheck_run = "(SELECT max(run_id) FROM run WHERE command = 'recheck')";
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM api_call WHERE run_id = {recheck_run}
                 AND path LIKE '/rest/v1/opportunities.json?%'"
        )),
        sent as i64,
        "every query sent is logged"
    );
}

/// A command's limiter counts the REST calls the commands just before it made (`api_call`):
/// a push followed at once by three rechecks stays within Marketo's window and meets no 606.
#[test]
fn commands_run_back_to_back_share_the_rate_window() {
    let db = pulled("1-initial");
    let sim = Sim::start(&["--rate-limit-calls", "4", "--rate-limit-window", "2"]);
    let limits = [
        ("MARKETO_RATE_LIMIT_CALLS", "4"),
        ("MARKETO_RATE_LIMIT_WINDOW_SECS", "2"),
    ];
    push_with(&db, &sim, &limits).expect_code(3);
    for _ in 0..3 {
        against(&db, &sim, &["recheck"], &limits).expect_code(0);
    }
    let state = sim.state();
    assert_eq!(state["refused_606"], 0);
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE error_code = '606'"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE path LIKE '/rest/v1/%.json?%'"),
        9,
        "three queries a recheck: leads, opportunities, companies"
    );
}

/// `sync` asks Marketo about a random sample of what it acknowledged once every
/// `sample_every_hours`: a lead deleted there draws a warning naming `recheck` (exit 3 the first
/// time, the standing warning with exit 0 after), `status` shows the last sample, and once
/// `recheck` and a push sent it again the next sample finds everything.
#[test]
fn sync_samples_what_marketo_holds_once_a_day_and_warns_of_what_it_lacks() {
    let db = pulled("1-initial");
    let sim = Sim::start(&[]);
    let dir = fixtures().join("demo").join("1-initial");
    let sync = |extra: &[(&str, &str)]| {
        against(
            &db,
            &sim,
            &["sync", "--fixtures", dir.to_str().unwrap()],
            extra,
        )
    };
    let samples = || db.count("SELECT count(*) FROM marketo_sample");
    // The sync's warning: what Marketo lacks of the sample, and the command that finds it all.
    let warned = |run: &Run, lacks: &str, recheck: &str| {
        assert!(
            run.stderr.contains(&format!(
                "warning: Marketo lacks {lacks} sampled at random of those it acknowledged"
            )) && run
                .stderr
                .contains(&format!("run `{recheck}` to find them all, then push")),
            "{}",
            run.stderr
        );
    };
    // The day is over since the last sample.
    let day_over = || {
        rusqlite::Connection::open(db.path())
            .unwrap()
            .execute(
                "UPDATE marketo_sample SET sampled_at = '2000-01-01T00:00:00Z'",
                [],
            )
            .unwrap();
    };
    let run = sync(&[]);
    run.expect_code(3); // the contact without an email
    assert!(
        run.stdout.contains(
            "sampled what Marketo holds: all 3 leads, 5 opportunities, 2 companies and 6 roles asked about are there"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM api_call WHERE path LIKE '/rest/v1/%.json?filterType=%'
                 AND run_id = (SELECT max(run_id) FROM run)"
        ),
        4,
        "a query each of leads, opportunities, companies and roles, logged"
    );
    // Not again within the day.
    sync(&[]).expect_code(0);
    assert_eq!(samples(), 1);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM api_call WHERE path LIKE '/rest/v1/%.json?filterType=%'
                 AND run_id = (SELECT max(run_id) FROM run)"
        ),
        0
    );

    sim.delete_lead("ana.ruiz@example.com");
    day_over();
    let run = sync(&[]);
    run.expect_code(3);
    warned(
        &run,
        "1 of 3 leads, 0 of 5 opportunities, 0 of 2 companies and 3 of 6 roles",
        "oppsync recheck",
    );
    let status = db.run(&["status"]);
    assert!(
        status.stdout.contains(
            "Marketo lacks 1 of 3 leads, 0 of 5 opportunities, 0 of 2 companies and 3 of 6 roles asked about: run `oppsync recheck`, then push"
        ),
        "{}",
        status.stdout
    );
    // Seen again the next day, it stands: the warning again, exit 0.
    day_over();
    let run = sync(&[]);
    run.expect_code(0);
    assert!(run.stderr.contains("warning: Marketo lacks 1 of 3 leads"));

    against(&db, &sim, &["recheck"], &[]).expect_code(0);
    push(&db, &sim).expect_code(0);
    day_over();
    let run = sync(&[]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(
            "all 3 leads, 5 opportunities, 2 companies and 6 roles asked about are there"
        ),
        "{}",
        run.stdout
    );
    // sample_every_hours = 0: never. (Each sync prunes the samples older than keep_days but
    // the last: those aged here.)
    assert_eq!(samples(), 1);
    let last = || db.count("SELECT max(sample_id) FROM marketo_sample");
    assert_eq!(last(), 4);
    day_over();
    sync(&[("MARKETO_SAMPLE_EVERY_HOURS", "0")]).expect_code(0);
    assert_eq!(last(), 4);

    // A role deleted on its own: the sample finds it, and names `recheck --roles`.
    sim.delete_first_role();
    day_over();
    let run = sync(&[]);
    run.expect_code(3);
    warned(
        &run,
        "0 of 3 leads, 0 of 5 opportunities, 0 of 2 companies and 1 of 6 roles",
        "oppsync recheck --roles",
    );
    let status = db.run(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["marketo_sample"]["roles_missing"], 1, "{status}");
    assert_eq!(status["marketo_sample"]["roles_asked"], 6, "{status}");
    assert!(
        db.run(&["status"])
            .stdout
            .contains("1 of 6 roles asked about: run `oppsync recheck --roles`, then push")
    );
    against(&db, &sim, &["recheck", "--roles"], &[]).expect_code(0);
    push(&db, &sim).expect_code(0);
    day_over();
    let run = sync(&[]);
    run.expect_code(0);
    assert!(run.stdout.contains("are there"), "{}", run.stdout);

    // A company deleted in Marketo: the sample finds it, and names plain `recheck`, which
    // looks companies up.
    sim.delete_company(&db, FABRIKAM);
    day_over();
    let run = sync(&[]);
    run.expect_code(3);
    warned(
        &run,
        "0 of 3 leads, 0 of 5 opportunities, 1 of 2 companies and 0 of 6 roles",
        "oppsync recheck",
    );
    let status: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["marketo_sample"]["companies_missing"], 1, "{status}");
    assert_eq!(status["marketo_sample"]["companies_asked"], 2, "{status}");
    assert!(db.run(&["status"]).stdout.contains(
        "1 of 2 companies and 0 of 6 roles asked about: run `oppsync recheck`, then push"
    ));
    against(&db, &sim, &["recheck"], &[]).expect_code(0);
    push(&db, &sim).expect_code(0);
    assert_eq!(sim.state()["companies"].as_array().unwrap().len(), 2);
}

/// `oppsync ARGS` against the simulator in the background, its stdout discarded and its stderr
/// kept to read (a few lines: what is waited on without reading it does not fill the pipe).
fn spawn_against(db: &TestDb, sim: &Sim, args: &[&str]) -> std::process::Child {
    db.command(
        db.dir.path(),
        args,
        &[
            ("MARKETO_BASE_URL", &sim.url),
            ("MARKETO_CLIENT_ID", "oppsync-sim"),
            ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Sends `signal` to `child`, and returns its exit code and what it said on stderr.
fn signalled(mut child: std::process::Child, signal: &str) -> (Option<i32>, String) {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut said = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut said).unwrap();
    (child.wait().unwrap().code(), said)
}

#[test]
fn a_single_push_or_recheck_asked_to_stop_ends_at_a_safe_point_and_the_next_run_converges() {
    let db = pulled("1-initial");
    let sim = Sim::start(&["--latency-ms", "300"]);
    let child = spawn_against(&db, &sim, &["push"]);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let status: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
        if status["runs"][0]["progress"]["rest_calls"]
            .as_i64()
            .unwrap_or(0)
            > 0
        {
            break;
        }
    }
    let (code, said) = signalled(child, "-TERM");
    assert_eq!(code, Some(1), "a stopped push exits 1, not killed: {said}");
    assert!(said.contains("stopped on request"), "{said}");
    let last = "(SELECT max(run_id) FROM run)";
    assert_eq!(
        db.column(&format!("SELECT outcome FROM run WHERE run_id = {last}")),
        ["failed"],
        "the run is closed, not left running"
    );
    assert!(
        db.count(&format!(
            "SELECT count(*) FROM api_call WHERE run_id = {last}"
        )) > 0,
        "the calls answered are recorded"
    );
    let run = push(&db, &sim);
    assert!(matches!(run.code, 0 | 3), "{}", run.stderr);
    push(&db, &sim).expect_code(0);
    let state = sim.state();
    let leads = state["leads"].as_array().unwrap();
    assert_eq!(
        leads.len() as i64,
        db.count("SELECT count(*) FROM mkto_lead WHERE skip_reason IS NULL"),
        "no lead twice"
    );

    // Once its run is recorded (its handlers are installed by then), the recheck has a query
    // of leads and one of opportunities to make, 300 ms each.
    let child = spawn_against(&db, &sim, &["recheck"]);
    for _ in 0..100 {
        if db.try_count("SELECT count(*) FROM run WHERE command = 'recheck'") == Some(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, said) = signalled(child, "-INT");
    assert_eq!(
        code,
        Some(1),
        "a stopped recheck exits 1, not killed: {said}"
    );
    assert!(said.contains("stopped on request"), "{said}");
    assert_eq!(
        db.column(&format!(
            "SELECT command || ' ' || outcome FROM run WHERE run_id = {last}"
        )),
        ["recheck failed"]
    );
}

/// Waits until the simulator has answered `calls` REST calls and then a second more with none
/// after them (the push is waiting), and returns how many it has answered.
fn calls_settled_at_least(sim: &Sim, calls: u64) -> u64 {
    let rest_calls = || sim.state()["rest_calls"].as_u64().unwrap();
    for _ in 0..200 {
        if rest_calls() >= calls {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = rest_calls();
    assert!(seen >= calls, "the push made {seen} calls, not {calls}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rest_calls(), seen, "the push is waiting, not calling");
    seen
}

#[test]
fn a_stop_ends_the_waits_before_a_marketo_retry_and_for_the_rate_window() {
    let db = pulled("1-initial");
    let config = db.dir.path().join("oppsync.toml");
    let sim = Sim::start(&[]);

    // The first call to sync companies fails transiently; its retry is a minute away.
    std::fs::write(&config, "[marketo]\nretry_base_ms = 60000\n").unwrap();
    sim.fault(json!({"code": "604", "path": "companies.json"}));
    let child = spawn_push(&db, &sim);
    for _ in 0..200 {
        if sim.state()["queued_faults"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sim.state()["queued_faults"], 0, "the fault was met");
    // Signals the waiting push, which stops without another call.
    let stopped = |child, signal, waiting_for| {
        let before = calls_settled_at_least(&sim, 1);
        let (code, said) = signalled(child, signal);
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains("stopped on request"), "{said}");
        assert_eq!(
            sim.state()["rest_calls"].as_u64().unwrap(),
            before,
            "the call {waiting_for} is not sent after the stop"
        );
        said
    };
    let said = stopped(child, "-TERM", "to retry");
    assert!(
        sim.state()["companies"].as_array().unwrap().is_empty(),
        "{said}"
    );

    // Two calls a minute: the calls of the push before count, so the limiter holds the first
    // call for most of a minute.
    std::fs::write(
        &config,
        "[marketo]\nrate_limit_calls = 2\nrate_limit_window_secs = 60\n",
    )
    .unwrap();
    stopped(spawn_push(&db, &sim), "-INT", "held by the limiter");

    // Nothing was lost: an unhindered push converges.
    std::fs::write(&config, "[marketo]\nretry_base_ms = 5\n").unwrap();
    push(&db, &sim).expect_code(3); // two records without an email are skipped
    push(&db, &sim).expect_code(0);
    assert_eq!(
        sim.state()["leads"].as_array().unwrap().len() as i64,
        db.count("SELECT count(*) FROM mkto_lead WHERE skip_reason IS NULL"),
    );

    // A sync whose push has nothing to send, stopped while its sample of what Marketo holds
    // (due: there is none yet) waits for the rate window: the sample is not stored as one
    // that could not be looked up, and the next sync makes it.
    std::fs::write(
        &config,
        "[marketo]\nrate_limit_calls = 2\nrate_limit_window_secs = 60\n",
    )
    .unwrap();
    let dir = fixtures().join("demo").join("1-initial");
    let sync = ["-v", "sync", "--fixtures", dir.to_str().unwrap()];
    let mut child = db
        .command(db.dir.path(), &sync, &marketo_env(&sim.url))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    while !said.contains("rate limit: waiting") {
        let read = std::io::BufRead::read_line(&mut out, &mut said).unwrap();
        assert!(read > 0, "the sync ended without waiting: {said}");
    }
    assert!(said.contains("nothing to push"), "{said}");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::io::Read::read_to_string(&mut out, &mut said).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{said}");
    assert!(
        said.contains("the sample of what Marketo holds is left to the next sync"),
        "{said}"
    );
    assert_eq!(db.count("SELECT count(*) FROM marketo_sample"), 0);
    std::fs::write(&config, "[marketo]\nretry_base_ms = 5\n").unwrap();
    against(&db, &sim, &sync[1..], &[]).expect_code(0);
    assert_eq!(
        db.column("SELECT error IS NULL AND leads_asked > 0 FROM marketo_sample"),
        ["1"]
    );
}
