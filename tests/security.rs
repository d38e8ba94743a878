//! Hostile and broken servers and settings (issue 7): one test or more per way a production run
//! could leak a credential, loop forever, be poisoned by one record, or panic. Each runs the real
//! binary against a scripted server from `broken`, on loopback only (127.0.0.2 plays "another
//! host").

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::broken::{BrokenServer, MarketoFaults, Reply, Request, company_id, marketo};
use crate::util::{Run, SimProcess, TestDb, fixtures};

const MARKETO_SECRET: &str = "mkto-client-secret-4d9e1b7c";
const DYNAMICS_SECRET: &str = "dv-client-secret-5b2e8d03";
const DYNAMICS_TOKEN: &str = "dv-access-token-91c4aa7e";
const ROLE_ID: &str = "7e8a6d3c-2c44-ef11-a316-000d3a5c0001";

/// A database with the demo org's first snapshot, and quick retries.
fn pulled() -> TestDb {
    let db = TestDb::new();
    quick(&db, "");
    let dir = fixtures().join("demo").join("1-initial");
    db.run(&["pull", "--fixtures", dir.to_str().unwrap()])
        .expect_code(0);
    db
}

fn quick(db: &TestDb, extra: &str) {
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        format!(
            "[marketo]\nretry_base_ms = 5\nmax_attempts = 3\nrate_limit_window_secs = 1\n\
             [dynamics]\nretry_base_ms = 5\nmax_attempts = 3\n{extra}"
        ),
    )
    .unwrap();
}

fn push_to(db: &TestDb, url: &str) -> Run {
    db.run_with_env(
        &["push"],
        &[
            ("MARKETO_BASE_URL", url),
            ("MARKETO_CLIENT_ID", "oppsync-test"),
            ("MARKETO_CLIENT_SECRET", MARKETO_SECRET),
        ],
    )
}

fn pull_from(db: &TestDb, url: &str, token_url: &str) -> Run {
    db.run_with_env(
        &["pull"],
        &[
            ("DYNAMICS_URL", url),
            ("DYNAMICS_TOKEN_URL", token_url),
            ("DYNAMICS_CLIENT_ID", "oppsync-test"),
            ("DYNAMICS_CLIENT_SECRET", DYNAMICS_SECRET),
        ],
    )
}

/// A Dataverse whose token endpoint (`/token`) works and whose data answers come from `pages`.
fn dataverse(pages: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static) -> BrokenServer {
    let token = json!({"token_type": "Bearer", "expires_in": 3599, "access_token": DYNAMICS_TOKEN});
    dataverse_with_token(token.to_string(), pages)
}

/// A Dataverse whose token endpoint answers `token` as is.
fn dataverse_with_token(
    token: String,
    pages: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static,
) -> BrokenServer {
    BrokenServer::start("127.0.0.1", move |request, url| {
        if request.path() == "/token" {
            return Reply::Body(200, token.clone());
        }
        // Only connection roles are scripted; every other entity set is empty.
        if !request.path().ends_with("/connectionroles") {
            let set = request.path().rsplit('/').next().unwrap_or("").to_string();
            return Reply::json(json!({
                "@odata.context": format!("{url}/api/data/v9.2/$metadata#{set}"),
                "value": []
            }));
        }
        pages(request, url)
    })
}

/// A connection roles page (the scripted entity set) with extra top-level members.
fn roles_page(url: &str, name: &str, extra: Value) -> Reply {
    let mut page = json!({
        "@odata.context": format!("{url}/api/data/v9.2/$metadata#connectionroles(name,category,statecode)"),
        "value": [{"connectionroleid": ROLE_ID, "name": name, "category": 1000, "statecode": 0}]
    });
    for (key, value) in extra.as_object().unwrap() {
        page[key] = value.clone();
    }
    Reply::json(page)
}

fn data_requests(server: &BrokenServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path().ends_with("/connectionroles"))
        .count()
}

fn last_run(db: &TestDb) -> (String, String) {
    let row = db.rows(
        "(SELECT outcome, coalesce(message, '') AS message FROM run ORDER BY run_id DESC LIMIT 1)",
        &["outcome".into(), "message".into()],
    );
    (row[0][0].clone(), row[0][1].clone())
}

/// Fails when any of `needles` is in the run's output or anywhere in the database's files.
fn assert_nowhere(db: &TestDb, run: &Run, needles: &[&str]) {
    let mut files = vec![(
        "output".to_string(),
        format!("{}{}", run.stdout, run.stderr).into_bytes(),
    )];
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    for needle in needles {
        for (name, bytes) in &files {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} leaked into {name}"
            );
        }
    }
}

// Row 1: configured URLs are parsed, user info refused, plain http only to loopback.

#[test]
fn a_url_with_user_info_is_refused_and_nothing_is_sent() {
    let elsewhere = BrokenServer::start("127.0.0.2", marketo(MarketoFaults::default()));
    let port = elsewhere.url.rsplit(':').next().unwrap().to_string();
    let db = pulled();
    let sneaky = format!("http://127.0.0.1:1@127.0.0.2:{port}");
    let run = push_to(&db, &sneaky);
    run.expect_code(2);
    assert!(run.stderr.contains("user info"), "{}", run.stderr);
    let run = db.run_with_env(
        &["pull"],
        &[
            ("DYNAMICS_URL", "https://contoso.crm.dynamics.invalid"),
            ("DYNAMICS_TOKEN_URL", &format!("{sneaky}/token")),
            ("DYNAMICS_CLIENT_ID", "x"),
            ("DYNAMICS_CLIENT_SECRET", DYNAMICS_SECRET),
        ],
    );
    run.expect_code(2);
    assert!(run.stderr.contains("dynamics.token_url"), "{}", run.stderr);
    let run = push_to(&db, "http://marketo.example.invalid");
    run.expect_code(2);
    assert!(run.stderr.contains("plain http"), "{}", run.stderr);
    assert!(
        elsewhere.requests().is_empty(),
        "secrets were sent to another host"
    );
    assert_eq!(db.count("SELECT count(*) FROM api_call"), 0);
}

// Row 2: links to another host are neither followed nor stored.

#[test]
fn a_next_link_to_another_host_fails_the_pull_before_anything_is_sent_or_staged() {
    let elsewhere = BrokenServer::start("127.0.0.2", |_r: &Request, url: &str| {
        roles_page(url, "Foreign", json!({}))
    });
    let foreign = format!(
        "{}/api/data/v9.2/connectionroles?$skiptoken=2",
        elsewhere.url
    );
    let org = dataverse(move |_r, url| {
        roles_page(url, "Home", json!({"@odata.nextLink": foreign.clone()}))
    });
    let db = TestDb::new();
    quick(&db, "");
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(1);
    assert!(run.stderr.contains("@odata.nextLink"), "{}", run.stderr);
    assert!(run.stderr.contains("127.0.0.2"), "{}", run.stderr);
    assert!(
        elsewhere.requests().is_empty(),
        "the token went to another host"
    );
    assert_eq!(db.count("SELECT count(*) FROM connectionrole"), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM staged_page WHERE entity_set = 'connectionroles'"),
        0
    );
    assert_eq!(last_run(&db).0, "failed");
}

#[test]
fn a_delta_link_to_another_host_is_not_stored() {
    let org = dataverse(|_r, url| {
        roles_page(
            url,
            "Home",
            json!({"@odata.deltaLink": "https://elsewhere.invalid/api/data/v9.2/connectionroles?$deltatoken=1"}),
        )
    });
    let db = TestDb::new();
    quick(&db, "");
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(1);
    assert!(run.stderr.contains("@odata.deltaLink"), "{}", run.stderr);
    assert!(run.stderr.contains("elsewhere.invalid"), "{}", run.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM pull_state WHERE entity_set = 'connectionroles'"),
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM connectionrole"), 0);
}

// Row 3: no endless pulls.

#[test]
fn two_pages_linking_to_each_other_fail_the_pull_instead_of_looping() {
    let org = dataverse(|request, url| {
        let next = if request.target.contains("page=b") {
            "a"
        } else {
            "b"
        };
        roles_page(
            url,
            "Loop",
            json!({"@odata.nextLink": format!("{url}/api/data/v9.2/connectionroles?page={next}")}),
        )
    });
    let db = TestDb::new();
    quick(&db, "");
    let started = Instant::now();
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(1);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(run.stderr.contains("already followed"), "{}", run.stderr);
    // The query, then page b, then page a, whose link back to b is refused.
    assert_eq!(data_requests(&org), 3);
    let (outcome, message) = last_run(&db);
    assert_eq!(outcome, "failed");
    assert!(message.contains("already followed"), "{message}");
}

#[test]
fn a_query_past_the_page_limit_fails_the_pull() {
    let org = dataverse(|request, url| {
        let n: u32 = request
            .target
            .split("page=")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        roles_page(
            url,
            "Endless",
            json!({"@odata.nextLink": format!("{url}/api/data/v9.2/connectionroles?page={}", n + 1)}),
        )
    });
    let db = TestDb::new();
    quick(&db, "max_pages_per_query = 4\n");
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(1);
    assert!(run.stderr.contains("max_pages_per_query"), "{}", run.stderr);
    assert_eq!(data_requests(&org), 4);
    assert_eq!(last_run(&db).0, "failed");
}

// Row 4: secrets and tokens quoted back by a server are cut from everything printed or stored.

#[test]
fn a_marketo_that_quotes_the_secret_and_token_gets_them_redacted() {
    let server = BrokenServer::start("127.0.0.1", |request: &Request, _url: &str| {
        if request.path() == "/identity/oauth/token" {
            return Reply::json(
                json!({"access_token": "mkto-token-quoted-6c1f", "expires_in": 3599}),
            );
        }
        Reply::json(json!({"requestId": "1", "success": false, "errors": [{
            "code": "603",
            "message": format!("Access denied for client_secret={MARKETO_SECRET} with token mkto-token-quoted-6c1f")
        }]}))
    });
    let db = pulled();
    let run = push_to(&db, &server.url);
    run.expect_code(1);
    assert!(run.stderr.contains("<redacted>"), "{}", run.stderr);
    let (outcome, message) = last_run(&db);
    assert_eq!(outcome, "failed");
    assert!(message.contains("Access denied"), "{message}");
    assert_nowhere(&db, &run, &[MARKETO_SECRET, "mkto-token-quoted-6c1f"]);
}

#[test]
fn a_describe_that_quotes_the_secret_and_token_is_stored_without_them() {
    let honest = marketo(MarketoFaults::default());
    let server = BrokenServer::start("127.0.0.1", move |request: &Request, url: &str| {
        let mut reply = honest(request, url);
        if request.path() == "/rest/v1/opportunities/describe.json"
            && let Reply::Body(_, body) = &mut reply
        {
            // A field whose name quotes the client secret and the bearer token sent.
            let bearer = request.header("authorization").unwrap_or("").to_string();
            let mut answer: Value = serde_json::from_str(body).unwrap();
            answer["result"][0]["fields"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": format!("x_{MARKETO_SECRET}_{bearer}"), "updateable": true}));
            *body = answer.to_string();
        }
        reply
    });
    let db = pulled();
    let run = push_to(&db, &server.url);
    assert!(matches!(run.code, 0 | 3), "{}", run.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM marketo_describe WHERE object = 'opportunity'"),
        1,
        "the describe is stored"
    );
    assert_nowhere(&db, &run, &[MARKETO_SECRET, "broken-marketo-token-7f3a9c"]);
}

#[test]
fn an_identity_provider_or_dataverse_that_quotes_a_secret_gets_it_redacted() {
    let org = BrokenServer::start("127.0.0.1", |_r: &Request, _url: &str| {
        Reply::Body(
            401,
            json!({
                "error": format!("invalid_client {DYNAMICS_SECRET}"),
                "error_description": format!("AADSTS7000215: Invalid client secret provided: {DYNAMICS_SECRET}.")
            })
            .to_string(),
        )
    });
    let db = TestDb::new();
    quick(&db, "");
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(2);
    assert!(run.stderr.contains("AADSTS7000215"), "{}", run.stderr);
    assert_nowhere(&db, &run, &[DYNAMICS_SECRET]);
    let denying = dataverse(|request, _url| {
        let bearer = request.header("authorization").unwrap_or("").to_string();
        Reply::Body(
            403,
            json!({"error": {"code": "0x80040220", "message": format!("Principal with {bearer} is missing prvReadConnectionRole")}})
                .to_string(),
        )
    });
    let run = pull_from(&db, &denying.url, &format!("{}/token", denying.url));
    run.expect_code(1);
    assert!(
        run.stderr.contains("prvReadConnectionRole"),
        "{}",
        run.stderr
    );
    assert_nowhere(&db, &run, &[DYNAMICS_SECRET, DYNAMICS_TOKEN]);
}

#[test]
fn a_page_that_quotes_the_token_is_staged_without_it() {
    let org = dataverse(|_r, url| roles_page(url, &format!("Bearer {DYNAMICS_TOKEN}"), json!({})));
    let db = TestDb::new();
    quick(&db, "");
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(0);
    assert_eq!(
        db.column("SELECT name FROM connectionrole"),
        ["Bearer <redacted>"]
    );
    assert_nowhere(&db, &run, &[DYNAMICS_TOKEN, DYNAMICS_SECRET]);
}

/// A token of a character or two would be cut out of every word that holds it ("every" read
/// "ever<redacted>" with a token `y`), in what is printed and stored alike: a server's garbage,
/// refused before it is registered or sent, from Marketo and from Entra ID alike.
#[test]
fn a_token_too_short_to_be_one_is_refused_not_cut_out_of_every_line() {
    let marketo = BrokenServer::start("127.0.0.1", |_r: &Request, _url: &str| {
        Reply::json(json!({"access_token": "y", "token_type": "bearer", "expires_in": 3599}))
    });
    let db = pulled();
    let run = push_to(&db, &marketo.url);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("answered an access_token of 1 character, too few characters"),
        "{}",
        run.stderr
    );
    let paths: Vec<String> = marketo
        .requests()
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/identity/oauth/token"],
        "no call carries the token, and the endpoint is asked once"
    );
    let org = dataverse_with_token(
        json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "ey"}).to_string(),
        |_r, url| roles_page(url, "Stakeholder", json!({})),
    );
    let run = pull_from(&db, &org.url, &format!("{}/token", org.url));
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("answered an access_token of 2 characters, too few characters"),
        "{}",
        run.stderr
    );
    assert_eq!(
        data_requests(&org),
        0,
        "no page is asked for with the token"
    );
    for run in [&run, &db.run(&["status"])] {
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(!output.contains("<redacted>"), "nothing is cut: {output}");
    }
    let counts = db.column("SELECT counts FROM run WHERE counts IS NOT NULL");
    assert!(!counts.is_empty());
    for text in counts {
        assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
    }
}

/// An identity endpoint that refuses the credentials is asked once a push, however many
/// requests wait for the token (the first describes go four at a time): each fails as the
/// first did, exit 2 for the credentials.
#[test]
fn an_identity_endpoint_that_refuses_is_asked_once() {
    let refusing = BrokenServer::start("127.0.0.1", |_r: &Request, _url: &str| {
        Reply::Body(
            401,
            json!({"error": "unauthorized", "error_description": "Bad client credentials"})
                .to_string(),
        )
    });
    let db = pulled();
    let run = push_to(&db, &refusing.url);
    run.expect_code(2);
    assert!(
        run.stderr.contains("Bad client credentials"),
        "{}",
        run.stderr
    );
    assert_eq!(refusing.requests().len(), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE path = '/identity/oauth/token'"),
        1
    );
}

/// A token long enough to be one may still spell what oppsync's own JSON holds: `"calls":`
/// cut out of a run's counts as text would leave them broken, and every later writing run
/// fails where it prunes old runs by reading them. Secrets are cut out of the JSON's strings
/// instead, so what is stored and printed stays JSON.
#[test]
fn a_token_that_spells_json_leaves_the_stored_and_printed_json_whole() {
    let honest = marketo(MarketoFaults::default());
    let server = BrokenServer::start("127.0.0.1", move |request: &Request, url: &str| {
        if request.path() == "/identity/oauth/token" {
            return Reply::json(json!({"access_token": "\"calls\":", "expires_in": 3599}));
        }
        honest(request, url)
    });
    let db = TestDb::new();
    quick(&db, "");
    let dir = fixtures().join("demo").join("1-initial");
    let env = [
        ("MARKETO_BASE_URL", server.url.as_str()),
        ("MARKETO_CLIENT_ID", "oppsync-test"),
        ("MARKETO_CLIENT_SECRET", MARKETO_SECRET),
    ];
    let run = db.run_with_env(
        &["sync", "--json", "--fixtures", dir.to_str().unwrap()],
        &env,
    );
    assert!(matches!(run.code, 0 | 3), "{}", run.stderr);
    let result: Value = serde_json::from_str(run.stdout.trim()).expect("--json prints JSON");
    assert!(
        result["counts"]["push"]["calls"].as_u64() > Some(0),
        "{result}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM run WHERE counts IS NOT NULL AND NOT json_valid(counts)"),
        0
    );
    // Once the sync is past keep_days, the next writing run prunes it, reading its counts.
    db.age_runs();
    quick(&db, "[history]\nkeep_days = 30\n");
    push_to(&db, &server.url).expect_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM run WHERE command = 'push'"),
        1
    );
}

// Row 5: one record cannot block the rest.

/// The demo's first snapshot with one opportunity's description made `bytes` long.
fn demo_with_long_description(dir: &Path, bytes: usize) {
    let source = fixtures().join("demo").join("1-initial");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let page = dir.join("opportunities-1.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&page).unwrap()).unwrap();
    json["value"][0]["description"] = json!("x".repeat(bytes));
    std::fs::write(&page, json.to_string()).unwrap();
}

#[test]
fn a_record_alone_over_the_request_limit_is_skipped_and_the_rest_goes() {
    let db = TestDb::new();
    quick(
        &db,
        "[mapping.opportunity]\ndescription = \"description\"\n",
    );
    let pages = db.dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    demo_with_long_description(&pages, 2_000_000);
    db.run(&["pull", "--fixtures", pages.to_str().unwrap()])
        .expect_code(0);
    let sim = SimProcess::start(&["sim", "marketo", "--port", "0", "--seed", "7"]);
    let run = db.run_with_env(
        &["push"],
        &[
            ("MARKETO_BASE_URL", &sim.url),
            ("MARKETO_CLIENT_ID", "oppsync-sim"),
            ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
        ],
    );
    run.expect_code(3);
    assert!(
        run.stderr.contains("over Marketo's 1 MB request limit"),
        "{}",
        run.stderr
    );
    let state = sim.get("/sim/state");
    let opportunities = state["opportunities"].as_array().unwrap().len() as i64;
    let staged = db.count("SELECT count(*) FROM mkto_opportunity");
    assert_eq!(opportunities, staged - 1, "every other opportunity went");
    assert!(
        !state["roles"].as_array().unwrap().is_empty(),
        "roles behind it went too"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_outcome WHERE status = 'not_sent' AND reasons LIKE '%1 MB request limit%'"),
        1
    );
}

/// The name of one of the demo's opportunities, which a broken Marketo will refuse.
fn poisoned_name(db: &TestDb) -> &'static str {
    let name = db.column(
        "SELECT json_extract(payload, '$.name') FROM mkto_opportunity ORDER BY key LIMIT 1 OFFSET 2",
    )[0]
    .clone();
    Box::leak(name.into_boxed_str())
}

#[test]
fn a_record_refused_at_request_level_is_isolated_and_the_rest_goes() {
    let db = pulled();
    let server = BrokenServer::start(
        "127.0.0.1",
        marketo(MarketoFaults {
            refuse_marker: Some(poisoned_name(&db)),
            ..MarketoFaults::default()
        }),
    );
    let run = push_to(&db, &server.url);
    run.expect_code(3);
    assert!(
        run.stderr.contains("Marketo refused this record alone"),
        "{}",
        run.stderr
    );
    let staged = db.count("SELECT count(*) FROM mkto_opportunity");
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'opportunity'"),
        staged - 1
    );
    assert!(db.count("SELECT count(*) FROM mkto_ack WHERE object = 'opportunity_role'") > 0);
    assert_eq!(
        db.count("SELECT count(*) FROM push_outcome WHERE reasons LIKE '%refused this record alone%HTTP 413%'"),
        1
    );
}

#[test]
fn a_record_whose_requests_are_never_answered_is_isolated_once_marketo_answers_others() {
    let db = pulled();
    let server = BrokenServer::start(
        "127.0.0.1",
        marketo(MarketoFaults {
            hang_up_marker: Some(poisoned_name(&db)),
            ..MarketoFaults::default()
        }),
    );
    let run = push_to(&db, &server.url);
    run.expect_code(3);
    let staged = db.count("SELECT count(*) FROM mkto_opportunity");
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'opportunity'"),
        staged - 1,
        "{}\n{:?}",
        run.stderr,
        server
            .requests()
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.target, r.body.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_outcome WHERE reasons LIKE '%refused this record alone%gave up%'"),
        1
    );
}

#[test]
fn a_marketo_that_answers_nothing_stops_the_push_instead_of_blaming_records() {
    let db = pulled();
    let server = BrokenServer::start("127.0.0.1", |request: &Request, url: &str| {
        if request.path() == "/identity/oauth/token" {
            return marketo(MarketoFaults::default())(request, url);
        }
        Reply::HangUp
    });
    let run = push_to(&db, &server.url);
    run.expect_code(1);
    assert!(
        run.stderr.contains("gave up after 3 attempts"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_outcome WHERE reasons LIKE '%refused this record%'"),
        0,
        "no record blamed"
    );
    assert_eq!(db.count("SELECT count(*) FROM mkto_ack"), 0);
}

// Row 6: the database and its companions are private.

#[cfg(unix)]
#[test]
fn the_database_is_created_private_and_a_shared_one_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new();
    let dir = fixtures().join("customer-account");
    let run = db.run(&["pull", "--fixtures", dir.to_str().unwrap()]);
    run.expect_code(0);
    assert!(
        !run.stderr.contains("readable by other users"),
        "{}",
        run.stderr
    );
    // SQLite removes -wal and -shm at the last close; db::tests checks them while open.
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let path = format!("{}{suffix}", db.path().display());
        if let Ok(meta) = std::fs::metadata(&path) {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{path} is {mode:o}");
        } else {
            assert!(suffix.starts_with('-'), "{path} is missing");
        }
    }
    std::fs::set_permissions(db.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = db.run(&["pull", "--fixtures", dir.to_str().unwrap()]);
    run.expect_code(0);
    assert!(
        run.stderr.contains("readable by other users"),
        "{}",
        run.stderr
    );
    // A `sync --every` says it once, not every cycle: a database shared with auditors on
    // purpose would otherwise fill the log with it.
    let marketo = SimProcess::start(&["sim", "marketo", "--port", "0"]);
    let run = db.sync_every_second("3", dir.to_str().unwrap(), &marketo.url);
    assert!(run.stdout.contains("cycle 3: done"), "{}", run.stdout);
    assert_eq!(
        run.stderr.matches("readable by other users").count(),
        1,
        "{}",
        run.stderr
    );
}

#[cfg(unix)]
#[test]
fn a_config_file_holding_a_secret_that_others_may_read_draws_a_warning_naming_the_variable() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new();
    let dir = fixtures().join("customer-account");
    db.run(&["pull", "--fixtures", dir.to_str().unwrap()])
        .expect_code(0);
    let config = db.dir.path().join("oppsync.toml");
    let warned = |text: &str, mode: u32, env: &[(&str, &str)]| -> bool {
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        let run = db.run_with_env(&["status"], env);
        run.expect_code(0);
        assert!(!run.stderr.contains("s3cret-in-file"), "{}", run.stderr);
        run.stderr.contains("is readable by other users (mode 644)")
            && run.stderr.contains("DYNAMICS_PASSWORD")
    };
    let secret = "[dynamics]\npassword = \"s3cret-in-file\"\n";
    assert!(warned(secret, 0o644, &[]));
    assert!(!warned(secret, 0o600, &[]), "private: no warning");
    let no_secret = "[dynamics]\nusername = \"someone@example.invalid\"\n";
    assert!(!warned(
        no_secret,
        0o644,
        &[("DYNAMICS_PASSWORD", "from-env")]
    ));
}

// Row 7: no setting or answer can panic.

#[test]
fn huge_settings_are_refused_by_name_and_huge_lifetimes_do_not_overflow() {
    let db = pulled();
    for (setting, value) in [
        ("rate_limit_window_secs", "18446744073709551615"),
        ("rate_limit_window_secs", "9223372036854775807"),
        ("retry_base_ms", "9223372036854775807"),
        ("http_timeout_secs", "0"),
    ] {
        std::fs::write(
            db.dir.path().join("oppsync.toml"),
            format!("[marketo]\n{setting} = {value}\n"),
        )
        .unwrap();
        let run = push_to(&db, "http://127.0.0.1:9");
        run.expect_code(2);
        assert!(run.stderr.contains(setting), "{}", run.stderr);
    }
    quick(&db, "");
    let server = BrokenServer::start("127.0.0.1", |request: &Request, url: &str| {
        if request.path() == "/identity/oauth/token" {
            return Reply::Body(
                200,
                r#"{"access_token": "huge-lifetime-token", "expires_in": 18446744073709551615}"#
                    .into(),
            );
        }
        marketo(MarketoFaults::default())(request, url)
    });
    push_to(&db, &server.url).expect_code(3); // the demo's contact without an email
    let org = dataverse_with_token(
        json!({"access_token": DYNAMICS_TOKEN, "expires_in": "18446744073709551615"}).to_string(),
        |_r, url| roles_page(url, "Fine", json!({})),
    );
    let fresh = TestDb::new();
    quick(&fresh, "");
    pull_from(&fresh, &org.url, &format!("{}/token", org.url)).expect_code(0);
}

// Row 8: a result without the id its object needs is not acknowledged.

#[test]
fn created_without_an_id_is_not_acknowledged_and_the_next_push_repairs_it() {
    let db = pulled();
    let broken = BrokenServer::start(
        "127.0.0.1",
        marketo(MarketoFaults {
            leads_without_id: true,
            ..MarketoFaults::default()
        }),
    );
    let run = push_to(&db, &broken.url);
    run.expect_code(3);
    assert!(run.stderr.contains("without the id"), "{}", run.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'lead'"),
        0
    );
    assert!(
        db.count("SELECT count(*) FROM push_outcome WHERE object = 'lead' AND status = 'failed'")
            > 0
    );
    let fixed = BrokenServer::start("127.0.0.1", marketo(MarketoFaults::default()));
    push_to(&db, &fixed.url).expect_code(0);
    assert!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'lead' AND marketo_id IS NOT NULL")
            > 0
    );
    assert!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'opportunity_role'") > 0,
        "the roles held back by the missing ids went"
    );
}

// Row 9: results are matched by seq, not by position.

#[test]
fn results_in_reverse_order_are_matched_by_seq() {
    let db = pulled();
    let server = BrokenServer::start(
        "127.0.0.1",
        marketo(MarketoFaults {
            reversed: true,
            ..MarketoFaults::default()
        }),
    );
    push_to(&db, &server.url).expect_code(3);
    let acks = db.rows(
        "mkto_ack",
        &["object".into(), "key".into(), "marketo_id".into()],
    );
    let leads: std::collections::BTreeMap<String, String> = acks
        .iter()
        .filter(|a| a[0] == "lead")
        .map(|a| (a[1].clone(), a[2].clone()))
        .collect();
    let mut checked = 0;
    for ack in &acks {
        let expected = match ack[0].as_str() {
            "company" => company_id(&ack[1]).to_string(),
            "opportunity" => format!("opp-{}", ack[1]),
            "opportunity_role" => {
                let parts: Vec<String> = serde_json::from_str(&ack[1]).unwrap();
                format!("role-{}-{}-{}", parts[0], leads[&parts[1]], parts[2])
            }
            _ => continue,
        };
        assert_eq!(ack[2], expected, "{ack:?}");
        checked += 1;
    }
    assert!(checked > 10, "{acks:?}");
}

#[test]
fn a_lead_answer_with_the_wrong_count_acknowledges_nothing_and_names_the_call() {
    let db = pulled();
    let server = BrokenServer::start(
        "127.0.0.1",
        marketo(MarketoFaults {
            short_lead_answer: true,
            ..MarketoFaults::default()
        }),
    );
    let run = push_to(&db, &server.url);
    run.expect_code(1);
    assert!(run.stderr.contains("/v1/leads.json"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing in it was acknowledged"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM mkto_ack WHERE object = 'lead'"),
        0
    );
    assert!(db.count("SELECT count(*) FROM mkto_ack WHERE object = 'company'") > 0);
}

// Row 13: every error says what happened.

#[test]
fn errors_say_what_the_server_did() {
    let db = pulled();
    quick(&db, "");
    let empty = BrokenServer::start("127.0.0.1", |_r: &Request, _u: &str| {
        Reply::Body(200, String::new())
    });
    let run = push_to(&db, &empty.url);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("without an access_token (the body is empty)"),
        "{}",
        run.stderr
    );
    let no_errors = BrokenServer::start("127.0.0.1", |request: &Request, _u: &str| {
        if request.path() == "/identity/oauth/token" {
            return Reply::json(json!({"access_token": "t-123456", "expires_in": 3599}));
        }
        Reply::json(json!({"requestId": "1", "success": false}))
    });
    let run = push_to(&db, &no_errors.url);
    run.expect_code(1);
    assert!(
        run.stderr.contains("without an errors array"),
        "{}",
        run.stderr
    );
    quick(&db, "");
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[marketo]\nretry_base_ms = 5\nmax_attempts = 1\nhttp_timeout_secs = 1\n",
    )
    .unwrap();
    let slow = BrokenServer::start("127.0.0.1", |request: &Request, _u: &str| {
        if request.path() == "/identity/oauth/token" {
            return Reply::json(json!({"access_token": "t-123456", "expires_in": 3599}));
        }
        Reply::Trickle {
            every: Duration::from_millis(200),
            bytes: 30,
        }
    });
    let run = push_to(&db, &slow.url);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("timed out reading the response after 1 s"),
        "{}",
        run.stderr
    );
}

// Row 12: an auditor with read access only can run the read-only commands.

/// Runs the binary as user and group 65534 (nobody), from `/`.
#[cfg(unix)]
fn as_nobody(args: &[&std::ffi::OsStr]) -> std::io::Result<std::process::Output> {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::BIN)
        .args(args)
        .current_dir("/")
        .output()
}

/// The stakeholders fixture pulled, for a test that reads it as another user (`as_nobody`);
/// `None`, after saying so, when this test process cannot act as one: it needs root and
/// `setpriv`, and a binary another user may run.
#[cfg(unix)]
fn pulled_for_an_auditor() -> Option<TestDb> {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !as_nobody(&["--version".as_ref()]).is_ok_and(|o| o.status.success()) {
        eprintln!(
            "needs root, setpriv and a binary another user may run: skipped here; CI runs as root"
        );
        return None;
    }
    let db = TestDb::new();
    let dir = fixtures().join("stakeholders");
    db.run(&["pull", "--fixtures", dir.to_str().unwrap()])
        .expect_code(0);
    Some(db)
}

/// Lets users other than the owner enter the folder of `db` and read its files, and write
/// none of them.
#[cfg(unix)]
fn readable_by_all(db: &TestDb) {
    use std::os::unix::fs::PermissionsExt;
    let dir = db.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn an_auditor_who_can_only_read_the_file_can_run_the_read_only_commands() {
    let Some(db) = pulled_for_an_auditor() else {
        return;
    };
    readable_by_all(&db);
    let before = std::fs::read(db.path()).unwrap();
    let path = db.path();
    for args in [
        &["status"][..],
        &["plan", "--json"],
        &["push", "--dry-run"],
        &["explain", "a7d3c2b1-2c44-ef11-a316-000d3a5c0001"],
    ] {
        let mut argv: Vec<&std::ffi::OsStr> = vec!["--db".as_ref(), path.as_os_str()];
        argv.extend(args.iter().map(std::ffi::OsStr::new));
        let output = as_nobody(&argv).unwrap();
        assert!(
            output.status.success(),
            "{args:?} as an unprivileged user: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(std::fs::read(db.path()).unwrap(), before, "nothing written");
}

// Row 12: an auditor's `status` tells a run in progress from one interrupted: the writer's lock
// file follows the database's read bits, and one the auditor still cannot read is said so
// rather than taken as "no writer".

#[cfg(unix)]
#[test]
fn an_auditors_status_sees_the_writer_or_says_it_cannot_tell() {
    use std::os::unix::fs::PermissionsExt;
    let Some(db) = pulled_for_an_auditor() else {
        return;
    };
    readable_by_all(&db);
    let lock_path = db.dir.path().join("oppsync.db.lock");
    // As the writer made it, before the database was shared.
    std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A run in progress: its row says `running`, and this process holds the writer lock.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute(
        "INSERT INTO run (command, args, started_at) VALUES ('pull', '[]', '2026-12-07T10:00:00Z')",
        [],
    )
    .unwrap();
    drop(conn);
    let lock = oppsync::db::WriterLock::acquire(&db.path()).unwrap();
    let status = || {
        let output = as_nobody(&[
            "--db".as_ref(),
            db.path().as_os_str(),
            "status".as_ref(),
            "--json".as_ref(),
        ])
        .unwrap();
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let seen = status();
    assert_eq!(seen["writer"]["pid"], std::process::id(), "{seen}");
    assert_eq!(seen["runs"][0]["outcome"], "running", "{seen}");
    assert_eq!(seen["writer_unknown"], Value::Null);
    // A lock file the auditor may not open: said so, and the run is not called interrupted.
    std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let seen = status();
    assert_eq!(seen["writer"], Value::Null, "{seen}");
    assert!(
        seen["writer_unknown"]
            .as_str()
            .is_some_and(|why| why.contains("cannot open lock file")),
        "{seen}"
    );
    assert_eq!(seen["runs"][0]["outcome"], "running", "{seen}");
    // Once the writer is gone, a readable lock file says so.
    drop(lock);
    std::fs::set_permissions(&lock_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let seen = status();
    assert_eq!(seen["runs"][0]["outcome"], "interrupted", "{seen}");
}

// Row 12: a user who may read the database but not write it, or beside it, is told what a
// writing command needs, and SQLite leaves no -wal or -shm behind it.

#[cfg(unix)]
#[test]
fn a_writing_command_without_write_access_says_what_it_needs_and_leaves_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let Some(db) = pulled_for_an_auditor() else {
        return;
    };
    let demo = fixtures().join("demo").join("1-initial");
    let pull = |path: &std::path::Path| {
        as_nobody(&[
            "--db".as_ref(),
            path.as_os_str(),
            "pull".as_ref(),
            "--fixtures".as_ref(),
            demo.as_os_str(),
        ])
        .unwrap()
    };
    // The owner's folder and lock file: the database itself may be written, the lock may not.
    readable_by_all(&db);
    std::fs::set_permissions(db.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = crate::util::file_names(db.dir.path());
    let output = pull(&db.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot open lock file"), "{stderr}");
    assert!(stderr.contains("read access only"), "{stderr}");
    assert_eq!(crate::util::file_names(db.dir.path()), before);
    // A database of the user's own, in its own folder, that it may only read.
    let own = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(own.path(), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(own.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = own.path().join("oppsync.db");
    std::fs::copy(db.path(), &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o400)).unwrap();
    let output = pull(&copy);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not writable by this user"), "{stderr}");
    assert_eq!(
        crate::util::file_names(own.path()),
        ["oppsync.db"],
        "no -wal, -shm or lock left"
    );
}

// Row 12: an auditor who cannot read the pages a writer left in the -wal is told so, rather
// than shown the database as it was before them (SQLite's `immutable`, which reads the
// database file alone); an empty -wal holds nothing to miss.

#[cfg(unix)]
#[test]
fn an_auditor_who_cannot_read_the_wal_is_refused_rather_than_shown_an_older_database() {
    let Some(written) = pulled_for_an_auditor() else {
        return;
    };
    // As a writer stopped before a checkpoint leaves them: a run recorded in the -wal only,
    // and no -shm (gone, or one the auditor may not open).
    let writer = rusqlite::Connection::open(written.path()).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             INSERT INTO run (command, args, started_at) VALUES ('pull', '[]', 'now');",
        )
        .unwrap();
    let db = TestDb::new();
    for suffix in ["", "-wal"] {
        let name = |path: std::path::PathBuf| format!("{}{suffix}", path.display());
        std::fs::copy(name(written.path()), name(db.path())).unwrap();
    }
    drop(writer);
    readable_by_all(&db);
    let before = std::fs::read(db.path()).unwrap();

    let path = db.path();
    let output = as_nobody(&["--db".as_ref(), path.as_os_str(), "status".as_ref()]).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has changes in its -wal file that this user cannot read"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing shown");
    assert_eq!(std::fs::read(db.path()).unwrap(), before, "nothing written");
    // Its owner, who may create the -shm, reads the run from the -wal.
    db.run(&["status"]).expect_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM run"),
        written.count("SELECT count(*) FROM run")
    );

    // The writer's run folded into the database file, and an empty -wal left without a -shm.
    let folded = TestDb::new();
    std::fs::copy(written.path(), folded.path()).unwrap();
    std::fs::write(format!("{}-wal", folded.path().display()), b"").unwrap();
    readable_by_all(&folded);
    let path = folded.path();
    let output = as_nobody(&["--db".as_ref(), path.as_os_str(), "status".as_ref()]).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let runs = written.count("SELECT count(*) FROM run");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("#{runs} ")),
        "the last run shown"
    );
}
