//! Live pulls against the Dataverse simulator (`oppsync sim dynamics`), both as real binaries.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Run, SimProcess, TestDb, fixtures};

fn dynamics(folder: &str, extra: &[&str]) -> SimProcess {
    let dir = fixtures().join(folder);
    let mut args = vec![
        "sim",
        "dynamics",
        "--port",
        "0",
        "--fixtures",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    SimProcess::start(&args)
}

fn env(sim: &SimProcess) -> Vec<(&'static str, String)> {
    vec![
        ("DYNAMICS_URL", sim.url.clone()),
        (
            "DYNAMICS_TOKEN_URL",
            format!("{}/oppsync-sim/oauth2/v2.0/token", sim.url),
        ),
        ("DYNAMICS_CLIENT_ID", "oppsync-sim".into()),
        ("DYNAMICS_CLIENT_SECRET", "oppsync-sim-secret".into()),
    ]
}

/// The settings of both simulators, for `sync`.
fn sync_env(dataverse: &SimProcess, marketo_url: &str) -> Vec<(&'static str, String)> {
    let mut env = env(dataverse);
    env.extend([
        ("MARKETO_BASE_URL", marketo_url.to_string()),
        ("MARKETO_CLIENT_ID", "oppsync-sim".into()),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret".into()),
    ]);
    env
}

fn quick(db: &TestDb) {
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[dynamics]\nretry_base_ms = 5\n[marketo]\nretry_base_ms = 5\n",
    )
    .unwrap();
}

fn live_pull(db: &TestDb, sim: &SimProcess, extra: &[&str]) -> Run {
    let env = env(sim);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args = vec!["pull"];
    args.extend_from_slice(extra);
    db.run_with_env(&args, &env)
}

/// Every staged table's typed columns and whether each record is live, plus the rule views:
/// what two pulls must agree on (not `raw`, sources or run ids).
fn snapshot(db: &TestDb) -> BTreeMap<String, Vec<Vec<String>>> {
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let mut out = BTreeMap::new();
    for table in [
        "opportunity",
        "account",
        "contact",
        "connection",
        "connectionrole",
        "systemuser",
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        let columns: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<String>, _>>()
            .unwrap()
            .into_iter()
            .filter(|c| {
                !matches!(
                    c.as_str(),
                    "raw"
                        | "source_file"
                        | "staged_run"
                        | "seen_run"
                        | "deleted_run"
                        | "deleted_reason"
                )
            })
            .chain(["deleted_run IS NOT NULL".to_string()])
            .collect();
        out.insert(table.to_string(), db.rows(table, &columns));
    }
    for (view, columns) in [
        ("opportunity_account", "opportunityid, accountid, rule"),
        (
            "opportunity_contact_role",
            "opportunityid, contactid, role, is_primary, rule, source_id",
        ),
    ] {
        let columns: Vec<String> = columns.split(", ").map(String::from).collect();
        out.insert(view.to_string(), db.rows(view, &columns));
    }
    out
}

fn fixture_pull(folders: &[&str]) -> TestDb {
    let db = TestDb::new();
    for folder in folders {
        let code = db
            .run(&[
                "pull",
                "--fixtures",
                fixtures().join(folder).to_str().unwrap(),
            ])
            .code;
        assert!(code == 0 || code == 3, "{folder}: {code}");
    }
    db
}

#[test]
fn a_pull_through_the_simulator_stages_what_pull_fixtures_stages() {
    for folder in [
        "demo/1-initial",
        "stakeholders",
        "recorded",
        "deletes/1-initial",
    ] {
        let sim = dynamics(folder, &["--page-size", "2"]);
        let db = TestDb::new();
        quick(&db);
        let run = live_pull(&db, &sim, &[]);
        run.expect_code(0);
        let expected = fixture_pull(&[folder]);
        assert_eq!(snapshot(&db), snapshot(&expected), "{folder}");
        assert!(
            db.count("SELECT count(*) FROM staged_page") >= 6,
            "{folder}: a page or more per entity set"
        );
        assert_eq!(db.count("SELECT count(*) FROM pull_state WHERE mode = 'change_tracking' AND delta_link LIKE '%$deltatoken=%'"), 6);
    }
}

#[test]
fn a_second_version_arrives_through_delta_links_as_updates_and_deletes() {
    let next = fixtures().join("demo/2-changes");
    let sim = dynamics(
        "demo/1-initial",
        &["--next", next.to_str().unwrap(), "--page-size", "3"],
    );
    let db = TestDb::new();
    quick(&db);
    live_pull(&db, &sim, &[]).expect_code(0);
    assert_eq!(sim.post("/sim/advance", &json!({}))["version"], 2);
    let run = live_pull(&db, &sim, &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("opportunities: 2 staged, 1 deleted (changes since the last pull)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("connections: 2 staged, 2 deleted (changes since the last pull)"),
        "{}",
        run.stdout
    );
    let expected = fixture_pull(&["demo/1-initial", "demo/2-changes"]);
    assert_eq!(snapshot(&db), snapshot(&expected));
    assert_eq!(
        db.count("SELECT count(*) FROM opportunity WHERE deleted_reason = 'deleted'"),
        1
    );
    // Nothing changed since: a third pull stages nothing.
    let run = live_pull(&db, &sim, &[]);
    assert!(run.stdout.contains("staged 0 records"), "{}", run.stdout);
}

#[test]
fn throttling_and_a_revoked_token_mid_pull_are_survived() {
    let sim = dynamics(
        "demo/1-initial",
        &["--throttle-every", "3", "--retry-after", "1"],
    );
    sim.post(
        "/sim/faults",
        &json!({"status": 401, "path": "opportunities"}),
    );
    let db = TestDb::new();
    quick(&db);
    let run = live_pull(&db, &sim, &["-v"]);
    run.expect_code(0);
    // Each wait is a line with -v, as Marketo's are; the pull's own line counts them.
    assert!(
        run.stdout
            .contains("throttled (429); waiting 1 s as Retry-After asks"),
        "{}",
        run.stdout
    );
    let state = sim.get("/sim/state");
    let said = format!(
        "Dynamics throttled {} requests (429; each waited as Retry-After asked)",
        state["throttled"]
    );
    assert!(run.stdout.contains(&said), "{}", run.stdout);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    assert!(state["throttled"].as_u64().unwrap() >= 1);
    assert_eq!(state["token_requests"], 2, "a 401 renews the token once");
    let throttled: i64 =
        db.count("SELECT json_extract(counts, '$.throttled') FROM run WHERE command = 'pull'");
    assert_eq!(throttled as u64, state["throttled"].as_u64().unwrap());
    assert_eq!(snapshot(&db), snapshot(&fixture_pull(&["demo/1-initial"])));
    // Without -v, off a terminal, the log keeps the pull's line and not each wait.
    let run = live_pull(&db, &sim, &[]);
    run.expect_code(0);
    assert!(run.stdout.contains("Dynamics throttled "), "{}", run.stdout);
    assert!(!run.stdout.contains("waiting 1 s"), "{}", run.stdout);
}

#[test]
fn an_interrupted_pull_leaves_no_delta_link_behind_and_the_rerun_loses_nothing() {
    let next = fixtures().join("demo/2-changes");
    let sim = dynamics(
        "demo/1-initial",
        &[
            "--next",
            next.to_str().unwrap(),
            "--page-size",
            "1",
            "--latency-ms",
            "40",
        ],
    );
    let db = TestDb::new();
    quick(&db);
    let env = env(&sim);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = db
        .command(db.dir.path(), &["pull"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let complete = db.count("SELECT count(*) FROM pull_state");
    assert!(
        complete < 5,
        "killed before the end, yet {complete} entity sets have a delta link"
    );
    let staged = db.count("SELECT count(*) FROM staged_page");
    assert!(
        staged > 0,
        "killed before anything was staged; lengthen the wait"
    );
    assert!(
        db.count("SELECT count(*) FROM staging_index_aside") > 0,
        "the first pull fills empty tables without their lookup indexes"
    );
    live_pull(&db, &sim, &[]).expect_code(0);
    sim.post("/sim/advance", &json!({}));
    live_pull(&db, &sim, &[]).expect_code(0);
    let fixtures = fixture_pull(&["demo/1-initial", "demo/2-changes"]);
    assert_eq!(snapshot(&db), snapshot(&fixtures));
    let indexes = "SELECT name || ' ' || coalesce(sql, '') FROM sqlite_master WHERE type = 'index' ORDER BY name";
    assert_eq!(db.column(indexes), fixtures.column(indexes));
    assert_eq!(db.count("SELECT count(*) FROM staging_index_aside"), 0);
}

#[test]
fn an_expired_delta_link_leads_to_a_full_resync() {
    let next = fixtures().join("demo/2-changes");
    let sim = dynamics("demo/1-initial", &["--next", next.to_str().unwrap()]);
    let db = TestDb::new();
    quick(&db);
    live_pull(&db, &sim, &[]).expect_code(0);
    sim.post("/sim/advance", &json!({}));
    sim.post("/sim/expire-deltas", &json!({}));
    let run = live_pull(&db, &sim, &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("opportunities: the stored delta link was refused"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("pulling opportunities in full"),
        "{}",
        run.stdout
    );
    assert_eq!(
        snapshot(&db),
        snapshot(&fixture_pull(&["demo/1-initial", "demo/2-changes"]))
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM opportunity WHERE deleted_reason = 'missing from full pull'"
        ),
        1
    );
    // Only the links issued before the expiry are refused: the next pull follows the new ones.
    // A set with no change says so only with -v.
    let run = live_pull(&db, &sim, &[]);
    run.expect_code(0);
    assert!(!run.stdout.contains("was refused"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("opportunities: 0 staged"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("staged 0 records from 6 pages"),
        "{}",
        run.stdout
    );
    let run = live_pull(&db, &sim, &["-v"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("opportunities: 0 staged, 0 deleted (changes since the last pull)"),
        "{}",
        run.stdout
    );
}

#[test]
fn pull_full_forces_a_full_pull_over_a_delta_link() {
    let sim = dynamics("demo/1-initial", &[]);
    let db = TestDb::new();
    quick(&db);
    live_pull(&db, &sim, &[]).expect_code(0);
    let run = live_pull(&db, &sim, &["--full"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("opportunities: 6 staged (6 of them unchanged), 0 deleted (full)"),
        "{}",
        run.stdout
    );
    // Left as they were, the records are still noted as seen by this pull: none of them is
    // missing from the snapshot.
    assert!(
        run.stdout.contains("; 0 deleted, 0 rejected"),
        "{}",
        run.stdout
    );
    assert_eq!(
        db.count(
            "SELECT (SELECT count(*) FROM opportunity WHERE deleted_run IS NOT NULL)
                  + (SELECT count(*) FROM contact WHERE deleted_run IS NOT NULL)"
        ),
        0
    );
}

#[test]
fn without_change_tracking_later_pulls_go_by_modifiedon() {
    let sim = dynamics(
        "demo/1-initial",
        &["--no-change-tracking", "contacts,connectionroles"],
    );
    let db = TestDb::new();
    quick(&db);
    let run = live_pull(&db, &sim, &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("contacts: change tracking is off for this table"),
        "{}",
        run.stdout
    );
    assert_eq!(db.column("SELECT mode || ' ' || coalesce(watermark, '-') FROM pull_state WHERE entity_set = 'contacts'"), ["watermark 2025-05-01T16:10:02Z"]);
    let run = live_pull(&db, &sim, &[]);
    run.expect_code(0);
    // The watermark (16:10:02) minus the overlap re-reads the five contacts modified that
    // minute; the sixth was modified a month before. Read again as they were, they are no
    // change: the line is left to -v, and the closing line says so.
    assert!(!run.stdout.contains("contacts: "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("staged 9 records (9 of them unchanged) from 6 pages"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.lines().count(),
        2,
        "an idle pull says where it pulls from and what it staged: {}",
        run.stdout
    );
    // Staged again as they were, the records keep the run that staged them, and the counts
    // say so: once old, a pull that changed nothing goes with the history, like one that
    // found no change.
    let run = live_pull(&db, &sim, &["-v"]);
    run.expect_code(0);
    for line in [
        "contacts: the org has no new_synctomkto column; every contacts record is in scope",
        "contacts: 5 staged (5 of them unchanged), 0 deleted (modified since the last pull)",
        "connectionroles: change tracking is off for this table (no delta link), and it has no \
         modifiedon: every pull reads it in full",
        "connectionroles: 4 staged (4 of them unchanged), 0 deleted (full)",
    ] {
        assert!(
            run.stdout.contains(line),
            "-v shows every set's line: {}",
            run.stdout
        );
    }
    assert_eq!(
        db.column(
            "SELECT json_extract(counts, '$.upserted') || ' ' || json_extract(counts, '$.unchanged')
             FROM run ORDER BY run_id"
        ),
        ["34 0", "9 9", "9 9"]
    );
    assert_eq!(
        db.column(
            "SELECT DISTINCT staged_run FROM contact
             UNION SELECT DISTINCT staged_run FROM connectionrole"
        ),
        ["1"]
    );
    // status says which sets go without change tracking, and how they are read instead.
    let status = db.run(&["status"]);
    status.expect_code(0);
    let marked: Vec<&str> = status
        .stdout
        .lines()
        .filter(|line| line.contains("change tracking off"))
        .collect();
    assert_eq!(marked.len(), 2, "{}", status.stdout);
    assert!(
        marked[0].trim_start().starts_with("contacts")
            && marked[0].ends_with("pulled by modifiedon; deletes need `pull --full`)")
            && marked[1].trim_start().starts_with("connectionroles")
            && marked[1].ends_with("every pull reads it in full)"),
        "{marked:?}"
    );
    let status = db.run(&["status", "--json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    let modes: Vec<String> = status["staged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["entity_set"], c["pull_mode"]))
        .collect();
    assert!(
        modes.contains(&r#""contacts" "watermark""#.to_string())
            && modes.contains(&r#""opportunities" "change_tracking""#.to_string()),
        "{modes:?}"
    );
    db.age_runs();
    let config = db.dir.path().join("oppsync.toml");
    let mut settings = std::fs::read_to_string(&config).unwrap();
    settings.push_str("[history]\nkeep_days = 30\n");
    std::fs::write(&config, settings).unwrap();
    db.run(&["init"]).expect_code(0);
    assert_eq!(
        db.column("SELECT run_id FROM run WHERE command = 'pull'"),
        ["1", "3"],
        "the first pull staged the records; the last is the last successful one"
    );
}

#[test]
fn ropc_and_string_expires_in_work_and_bad_credentials_exit_2() {
    let sim = dynamics("customer-account", &["--expires-in-string"]);
    let db = TestDb::new();
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[dynamics]\nauth = \"ropc\"\n",
    )
    .unwrap();
    let mut env = env(&sim);
    env.retain(|(k, _)| *k != "DYNAMICS_CLIENT_SECRET");
    env.push(("DYNAMICS_USERNAME", "sync@oppsync-sim.example".into()));
    env.push(("DYNAMICS_PASSWORD", "oppsync-sim-password".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    db.run_with_env(&["pull"], &pairs).expect_code(0);
    let mut wrong = pairs.clone();
    wrong.retain(|(k, _)| *k != "DYNAMICS_PASSWORD");
    wrong.push(("DYNAMICS_PASSWORD", "not-the-password"));
    let run = db.run_with_env(&["pull"], &wrong);
    run.expect_code(2);
    assert!(run.stderr.contains("AADSTS50126"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-password"));
}

#[test]
fn a_live_pull_without_settings_exits_2_naming_them() {
    let db = TestDb::new();
    let run = db.run(&["pull"]);
    run.expect_code(2);
    assert!(run.stderr.contains("dynamics.url"), "{}", run.stderr);
    let run = db.run_with_env(
        &["pull"],
        &[("DYNAMICS_URL", "https://contoso.crm.dynamics.com")],
    );
    run.expect_code(2);
    for name in [
        "dynamics.client_id",
        "dynamics.tenant",
        "dynamics.client_secret",
    ] {
        assert!(run.stderr.contains(name), "{}", run.stderr);
    }
}

#[test]
fn sync_pulls_live_then_pushes() {
    let dataverse = dynamics("demo/1-initial", &[]);
    let marketo = SimProcess::start(&["sim", "marketo", "--port", "0"]);
    let db = TestDb::new();
    quick(&db);
    let env = sync_env(&dataverse, &marketo.url);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = db.run_with_env(&["sync"], &pairs);
    run.expect_code(3); // the demo's contact without an email
    let state: Value = marketo.get("/sim/state");
    assert_eq!(state["opportunities"].as_array().unwrap().len(), 5);
    assert_eq!(state["roles"].as_array().unwrap().len(), 6);
    let second = db.run_with_env(&["sync"], &pairs);
    assert!(
        second.stdout.contains("no REST call made"),
        "{}",
        second.stdout
    );
}

#[test]
fn mapped_columns_are_selected_and_a_column_the_org_lacks_is_named() {
    let sim = dynamics("demo/1-initial", &[]);
    let db = TestDb::new();
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[dynamics]\nretry_base_ms = 5\n[mapping.company]\nsicCode = \"accountnumber\"\n",
    )
    .unwrap();
    live_pull(&db, &sim, &[]).expect_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM account WHERE raw -> '$.accountnumber' IS NOT NULL"),
        3
    );
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[mapping.opportunity]\nfiscalYear = \"msdyn_fiscalyear\"\n",
    )
    .unwrap();
    let run = live_pull(&db, &sim, &["--full"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("Could not find a property named 'msdyn_fiscalyear'"),
        "{}",
        run.stderr
    );
}

#[test]
fn sync_every_runs_cycles_and_a_sigterm_mid_push_ends_it_cleanly_then_a_rerun_converges() {
    let next = fixtures().join("demo/2-changes");
    let dataverse = dynamics("demo/1-initial", &["--next", next.to_str().unwrap()]);
    let marketo = SimProcess::start(&["sim", "marketo", "--port", "0", "--latency-ms", "400"]);
    let db = TestDb::new();
    quick(&db);
    let env = sync_env(&dataverse, &marketo.url);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = db
        .command(db.dir.path(), &["sync", "--every", "1s"], &pairs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |db: &TestDb| -> Value {
        serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap()
    };
    // Bounded polling: the first cycle finishes, then the org changes in Dynamics.
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        for _ in 0..300 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}");
    };
    wait_for("the first cycle", &|| {
        db.try_count("SELECT count(*) FROM run WHERE command = 'sync' AND outcome <> 'running'")
            .unwrap_or(0)
            >= 1
    });
    dataverse.post("/sim/advance", &json!({}));
    // The second cycle pushes the changes: stop it while its requests are in flight.
    wait_for("the second cycle's push", &|| {
        let runs = status(&db)["runs"].clone();
        runs[0]["outcome"] == "running"
            && runs[0]["run_id"].as_i64().unwrap_or(0) >= 2
            && runs[0]["progress"]["rest_calls"].as_i64().unwrap_or(0) > 0
    });
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0), "SIGTERM ends the run with exit 0");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("cycle 1: done"), "{out}");
    assert!(out.contains("stopped on request"), "{out}");
    let stopped = db.column("SELECT message FROM run ORDER BY run_id DESC LIMIT 1");
    assert!(stopped[0].contains("stopped on request"), "{stopped:?}");
    // A rerun converges: Marketo holds exactly what the views derive, no lead twice.
    db.run_with_env(&["sync"], &pairs).expect_code(0);
    let state: Value = marketo.get("/sim/state");
    assert_eq!(
        state["opportunities"].as_array().unwrap().len() as i64,
        db.count("SELECT count(*) FROM mkto_opportunity WHERE skip_reason IS NULL")
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM mkto_opportunity m JOIN mkto_ack a
             ON a.object = 'opportunity' AND a.key = m.key AND a.payload = m.payload"
        ),
        db.count("SELECT count(*) FROM mkto_opportunity WHERE skip_reason IS NULL"),
        "every opportunity acknowledged as it is now"
    );
    let leads = state["leads"].as_array().unwrap();
    let mut emails: Vec<String> = leads
        .iter()
        .map(|l| l["email"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), leads.len(), "no lead twice");
    assert!(
        state["opportunities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "Northwind - support plan"),
        "the change made between cycles reached Marketo"
    );
}

#[test]
fn sync_every_stops_after_max_cycles_and_stamps_its_lines() {
    let marketo = SimProcess::start(&["sim", "marketo", "--port", "0"]);
    let db = TestDb::new();
    let marketo_url = [("MARKETO_BASE_URL", marketo.url.as_str())];
    let run = sync_the_demo_every_second(&db, "2", &marketo_url, &[]);
    run.expect_code(0); // the second cycle finds only the standing problem
    assert_eq!(
        db.count("SELECT count(*) FROM run WHERE command = 'sync'"),
        2
    );
    let stamped = run
        .stdout
        .lines()
        .filter(|l| l.contains(" cycle ") && chrono_like(l))
        .count();
    assert!(stamped >= 4, "{}", run.stdout);
    // With --json, stdout holds one result object per cycle and nothing else; the stamped
    // lines go to stderr.
    let run = sync_the_demo_every_second(&db, "2", &marketo_url, &["--json"]);
    run.expect_code(0);
    let results: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(results.len(), 2, "{}", run.stdout);
    assert!(
        results
            .iter()
            .all(|r| r["command"] == "sync" && r["exit_code"] == 0)
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.ends_with(" cycle 2: done, exit code 0") && chrono_like(l)),
        "{}",
        run.stderr
    );
    let bad = db.run(&["sync", "--every", "0s"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("between 1s and 24h"), "{}", bad.stderr);
}

#[test]
fn the_last_of_max_cycles_failing_says_so_rather_than_when_the_next_starts() {
    let db = TestDb::new();
    // Nothing listens on port 1; one attempt, so that the cycle fails at once.
    let run = sync_the_demo_every_second(
        &db,
        "1",
        &[
            ("MARKETO_BASE_URL", "http://127.0.0.1:1"),
            ("MARKETO_MAX_ATTEMPTS", "1"),
        ],
        &[],
    );
    run.expect_code(1);
    assert!(
        run.stdout.contains("cycle 1 failed (1 in a row)")
            && run.stdout.contains("that was the last of --max-cycles"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("next cycle in"), "{}", run.stdout);
}

/// `sync --every 1s --max-cycles MAX` of the demo's first fixture folder into `db` (with the
/// quick settings), with the simulator's Marketo credentials and `env`.
fn sync_the_demo_every_second(db: &TestDb, max: &str, env: &[(&str, &str)], extra: &[&str]) -> Run {
    quick(db);
    let dir = fixtures().join("demo/1-initial");
    let mut env = env.to_vec();
    env.extend([
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
    ]);
    let args = ["sync", "--every", "1s", "--max-cycles", max, "--fixtures"];
    let mut args = args.to_vec();
    args.push(dir.to_str().unwrap());
    args.extend_from_slice(extra);
    db.run_with_env(&args, &env)
}

#[test]
fn status_and_a_writer_turned_away_say_when_a_waiting_sync_every_runs_its_next_cycle() {
    let marketo = SimProcess::start(&["sim", "marketo", "--port", "0"]);
    let db = TestDb::new();
    quick(&db);
    let dir = fixtures().join("demo/1-initial");
    let env = [
        ("MARKETO_BASE_URL", marketo.url.as_str()),
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
    ];
    /// The service, killed if the test fails before it stops it (it would wait an hour).
    struct Service(std::process::Child);
    impl Drop for Service {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut service = Service(
        db.command(
            db.dir.path(),
            &["sync", "--every", "1h", "--fixtures", dir.to_str().unwrap()],
            &env,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let child = &mut service.0;
    let status = || -> Value {
        let run = db.run(&["status", "--json"]);
        serde_json::from_str(&run.stdout).unwrap_or(Value::Null)
    };
    // Bounded polling: the first cycle ends, and the process waits an hour for the next.
    let mut waiting = Value::Null;
    for _ in 0..300 {
        waiting = status()["writer"]["waiting"].clone();
        if !waiting.is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let waiting = waiting.as_str().expect("status names the waiting writer");
    assert!(
        waiting.starts_with(
            "`sync --every 1h` between cycles: cycle 1 done, exit code 3; cycle 2 starts at 20"
        ),
        "{waiting}"
    );
    assert_eq!(status()["writer"]["pid"], json!(child.id()));
    let human = db.run(&["status"]);
    assert!(
        human.stdout.contains(&format!(
            "writer: pid {}, `sync --every 1h` between cycles",
            child.id()
        )),
        "{}",
        human.stdout
    );
    // A writer turned away is told who holds the database, and why it would wait so long.
    let turned_away = db.run_with_env(&["push"], &env);
    turned_away.expect_code(1);
    assert!(
        turned_away.stderr.contains(&format!(
            "another oppsync process (pid {}) holds {}",
            child.id(),
            db.path().display()
        )) && turned_away.stderr.contains("cycle 2 starts at")
            && turned_away.stderr.contains("stop it (SIGTERM)"),
        "{}",
        turned_away.stderr
    );
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(status()["writer"], Value::Null, "no writer once it stopped");
    db.run_with_env(&["push"], &env).expect_code(0);
}

/// Whether a line starts with an RFC 3339 UTC timestamp.
fn chrono_like(line: &str) -> bool {
    let stamp = line.split(' ').next().unwrap_or("");
    stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T'
}

#[test]
fn check_passes_on_a_good_setup_and_names_each_misconfiguration() {
    let dataverse = dynamics("demo/1-initial", &[]);
    let marketo = SimProcess::start(&["sim", "marketo", "--port", "0"]);
    let native = SimProcess::start(&["sim", "marketo", "--port", "0", "--native-crm-sync"]);
    let db = TestDb::new();
    quick(&db);
    let base = |marketo_url: &str, secret: &str| -> Vec<(&'static str, String)> {
        let mut env = sync_env(&dataverse, marketo_url);
        env.retain(|(k, _)| *k != "MARKETO_CLIENT_SECRET");
        env.push(("MARKETO_CLIENT_SECRET", secret.to_string()));
        env
    };
    let check = |env: &[(&'static str, String)]| -> (Run, Value) {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let run = db.run_with_env(&["check", "--json"], &pairs);
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        (run, json)
    };
    let failed = |json: &Value| -> Vec<String> {
        json["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["verdict"] == "fail")
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Before the first pull: everything but the fields can be checked.
    let (run, json) = check(&base(&marketo.url, "oppsync-sim-secret"));
    run.expect_code(0);
    assert!(!db.path().exists(), "check creates no database");
    let pairs: Vec<(&str, String)> = base(&marketo.url, "oppsync-sim-secret");
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    db.run_with_env(&["pull"], &pairs).expect_code(0);
    let (run, json2) = check(&base(&marketo.url, "oppsync-sim-secret"));
    run.expect_code(0);
    assert!(failed(&json).is_empty() && failed(&json2).is_empty());
    let names: Vec<&str> = json2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "Entra ID token",
        "Dataverse WhoAmI",
        "opportunities: readable",
        "opportunities: change tracking",
        "Marketo identity",
        "Marketo native CRM sync",
        "Marketo fields",
        "Marketo API usage",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    // A wrong Marketo secret, native sync, a column the org lacks: exit 2, each named.
    let (run, json) = check(&base(&marketo.url, "wrong-secret-123"));
    run.expect_code(2);
    assert_eq!(failed(&json), ["Marketo identity"]);
    let (run, json) = check(&base(&native.url, "oppsync-sim-secret"));
    run.expect_code(2);
    assert_eq!(failed(&json), ["Marketo native CRM sync", "Marketo fields"]);
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[dynamics]\nretry_base_ms = 5\n[mapping.company]\nsicCode = \"accountnumber_typo\"\n",
    )
    .unwrap();
    let (run, json) = check(&base(&marketo.url, "oppsync-sim-secret"));
    run.expect_code(2);
    assert_eq!(failed(&json), ["accounts: readable"]);
    let accounts = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "accounts: readable")
        .unwrap();
    assert!(
        accounts["detail"]
            .as_str()
            .unwrap()
            .contains("accountnumber_typo"),
        "{accounts}"
    );
    // Unreachable Marketo: exit 1.
    quick(&db);
    let (run, _) = check(&base("http://127.0.0.1:9", "oppsync-sim-secret"));
    run.expect_code(1);
}

#[test]
fn a_pull_asked_to_stop_while_dynamics_throttles_it_stops_without_waiting_out_retry_after() {
    use std::io::BufRead;
    let sim = dynamics("demo/1-initial", &[]);
    sim.post(
        "/sim/faults",
        &json!({"status": 429, "retry_after": 120, "path": "opportunities", "count": 1}),
    );
    let db = TestDb::new();
    quick(&db);
    let env = env(&sim);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = db
        .command(db.dir.path(), &["-v", "pull"], &pairs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let waiting = line.contains("throttled (429); waiting 120 s");
        seen.push(line);
        if waiting {
            break;
        }
    }
    let requests = sim.get("/sim/state")["requests"].clone();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut said = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut said).unwrap();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(1), "{seen:#?}\n{said}");
    assert!(said.contains("stopped on request"), "{said}");
    assert_eq!(
        sim.get("/sim/state")["requests"],
        requests,
        "stopped in the wait, not after asking again"
    );
    assert_eq!(
        db.column("SELECT outcome FROM run WHERE command = 'pull'"),
        ["failed"]
    );
    // Nothing of the set it was pulling is half-staged, and the next pull gets it all.
    live_pull(&db, &sim, &[]).expect_code(0);
    assert_eq!(snapshot(&db), snapshot(&fixture_pull(&["demo/1-initial"])));
}
