//! Command-line behaviour that is not tied to one data set: locking, usage errors, explain,
//! status, reruns and what a failed pull leaves behind.

use std::fs::OpenOptions;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::util::{BIN, TestDb, fixtures, marketo_env};

fn scenario(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A fixture folder whose first page stages opportunity 0b0b0b0b-...0099 named `name`, and whose
/// second is not JSON, so that a pull of it stops after staging the first.
fn one_opportunity_then_a_broken_page(db: &TestDb, name: &str) -> PathBuf {
    let pages = db.dir.path().join("unfinished");
    std::fs::create_dir(&pages).unwrap();
    let page = json!({
        "@odata.context": "https://org.invalid/api/data/v9.2/$metadata#opportunities",
        "value": [{"opportunityid": "0b0b0b0b-2c44-ef11-a316-000d3a5c0099", "name": name}]
    });
    std::fs::write(pages.join("1-opportunities.json"), page.to_string()).unwrap();
    std::fs::write(pages.join("2-accounts.json"), "{ not json").unwrap();
    pages
}

/// The README's first command: `oppsync demo` runs every step against its own Marketo
/// simulator, and leaves a database whose stored rows Marketo holds, as `status` and `verify`
/// read it back.
#[test]
fn the_demo_pushes_both_snapshots_and_leaves_nothing_to_send() {
    let db = TestDb::new();
    let run = db.run(&["demo"]);
    run.expect_code(0);
    let steps: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|line| line.split_once(" == ").map(|(_, step)| step))
        .collect();
    assert_eq!(steps.len(), 7, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "The Marketo simulator now holds 2 sales persons, 2 companies, 4 leads, 5 opportunities and 5 opportunity roles (15 REST calls in all)."
        ),
        "{}",
        run.stdout
    );
    let last_step = run.stdout.split(" == 7.").nth(1).unwrap_or_default();
    assert!(
        last_step
            .contains("nothing to push: Marketo already holds every change (no REST call made)"),
        "{}",
        run.stdout
    );
    let status = db.run(&["status", "--json"]);
    status.expect_code(0);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["last_success"]["command"], "demo");
    for (object, counts) in status["pending"].as_object().unwrap() {
        let to_send = ["create", "update", "delete"].map(|action| counts[action].as_u64());
        assert_eq!(to_send, [Some(0); 3], "{object}: {counts}");
    }
    // The contact without an email: its lead and its role, skipped and standing.
    assert_eq!(status["problems_total"], 2);
    db.run(&["verify"]).expect_code(0);
}

#[test]
fn a_second_writer_exits_1_while_another_holds_the_database() {
    let db = TestDb::new();
    let lock_path = format!("{}.lock", db.path().display());
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.try_lock().unwrap();
    let run = db.run(&["pull", "--fixtures", &scenario("customer-contact")]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("another oppsync process is writing"),
        "{}",
        run.stderr
    );
    assert!(
        !db.path().exists(),
        "the refused process must not touch the database"
    );
    let run = db.run(&[
        "pull",
        "--json",
        "--fixtures",
        &scenario("customer-contact"),
    ]);
    run.expect_code(1);
    let result: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(result["run_id"], Value::Null, "no run could be recorded");
    assert_eq!(result["outcome"], "failed");
    assert_eq!(result["exit_code"], 1);
    drop(lock);
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
}

#[test]
fn a_bad_config_exits_2_naming_the_setting_and_is_recorded() {
    let db = TestDb::new();
    let config = db.dir.path().join("bad.toml");
    std::fs::write(&config, "[rules]\nstakeholder_categorys = [1000]\n").unwrap();
    let run = db.run(&[
        "--config",
        config.to_str().unwrap(),
        "pull",
        "--fixtures",
        &scenario("customer-contact"),
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("stakeholder_categorys"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    // Off a terminal the error is stamped with the time, as every other line.
    let (stamp, said) = run.stderr.split_once(' ').unwrap();
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && said.starts_with("error: "),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.count("SELECT count(*) FROM run WHERE outcome = 'usage_error' AND exit_code = 2"),
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM opportunity"), 0);
}

#[test]
fn a_damaged_database_exits_2_saying_how_to_start_again_and_stops_sync_every() {
    let db = TestDb::new();
    let dir = scenario("customer-contact");
    db.run(&["pull", "--fixtures", &dir]).expect_code(0);
    // Cut short after a few pages, as a copy taken halfway or a failing disk leaves it: SQLite's
    // header is intact, the tables it points to are not.
    let file = OpenOptions::new().write(true).open(db.path()).unwrap();
    file.set_len(3 * 8192).unwrap();
    drop(file);
    // Nothing listens at port 9 of this machine: no Marketo call is made anyway.
    let marketo_url = "http://127.0.0.1:9";
    let runs = [
        (
            "status",
            db.run_with_env(&["status"], &marketo_env(marketo_url)),
        ),
        ("pull", db.run(&["pull", "--fixtures", &dir])),
        ("sync --every", db.sync_every_second("3", &dir, marketo_url)),
    ];
    for (args, run) in runs {
        run.expect_code(2);
        assert!(
            run.stderr.contains("is damaged (")
                && run
                    .stderr
                    .contains("move it aside with its -wal and -shm files"),
            "{args:?}: {}",
            run.stderr
        );
        // A rerun cannot mend it: `sync --every` stops at its first cycle rather than
        // retrying, and systemd does not restart it on exit 2.
        assert!(!run.stdout.contains("cycle 2"), "{}", run.stdout);
    }
}

#[test]
fn a_database_migrated_by_a_newer_oppsync_exits_2_and_stops_sync_every() {
    let db = TestDb::new();
    let dir = scenario("customer-contact");
    db.run(&["pull", "--fixtures", &dir]).expect_code(0);
    // As a newer oppsync leaves it, before its binary is rolled back.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let known: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "user_version", known + 1).unwrap();
    drop(conn);
    let runs = [
        ("status", db.run(&["status"])),
        ("pull", db.run(&["pull", "--fixtures", &dir])),
        (
            "sync --every",
            db.sync_every_second("3", &dir, "http://127.0.0.1:9"),
        ),
    ];
    for (args, run) in runs {
        run.expect_code(2);
        assert!(
            run.stderr.contains(&format!(
                "is at schema version {}, newer than this oppsync knows ({known}): it was \
                 migrated by a newer oppsync",
                known + 1
            )),
            "{args}: {}",
            run.stderr
        );
        assert!(!run.stdout.contains("cycle 2"), "{args}: {}", run.stdout);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM run"),
        1,
        "nothing is recorded in a database this oppsync does not know"
    );
}

#[test]
fn status_stale_after_exits_1_when_no_push_finished_within_it() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    let run = db.run(&["status", "--stale-after", "1h"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("stale: none within --stale-after 1h: no push or sync has finished yet"),
        "{}",
        run.stderr
    );
    // The demo's pushes finished just now.
    db.run(&["demo"]).expect_code(0);
    db.run(&["status", "--stale-after", "1h"]).expect_code(0);
    // Three hours later; a failure from before the demo is not why it is stale.
    let failed_at = |ago: &str, message: &str| {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute(
            "INSERT INTO run (command, args, started_at, finished_at, outcome, exit_code, message)
             VALUES ('sync', '[]', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?1),
                     strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?1), 'failed', 1, ?2)",
            [ago, message],
        )
        .unwrap();
    };
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute(
        "UPDATE run SET finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-3 hours', '-5 minutes')",
        [],
    )
    .unwrap();
    drop(conn);
    failed_at("-4 hours", "an older failure");
    let run = db.run(&["status", "--stale-after", "2h"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("(3h05m ago)") && !run.stderr.contains("failure"),
        "{}",
        run.stderr
    );
    failed_at("-1 hours", "cannot reach Marketo at https://x.invalid");
    // The demo records one run of its own.
    let last = db.count("SELECT max(run_id) FROM run WHERE command = 'demo' AND outcome = 'done'");
    for args in [
        &["status", "--stale-after", "2h"][..],
        &["status", "--json", "--stale-after", "2h"],
    ] {
        let run = db.run(args);
        run.expect_code(1);
        let said = format!("the last push or sync that finished, #{last} demo, did at ");
        assert!(
            run.stderr.contains(&said)
                && run.stderr.contains("(3h05m ago); the newest failure: #")
                && run
                    .stderr
                    .contains("cannot reach Marketo at https://x.invalid"),
            "{}",
            run.stderr
        );
        // What status shows is shown all the same.
        assert!(run.stdout.contains("schema_version") || run.stdout.contains("schema version"));
    }
    // A sync killed half an hour ago is the newest failure: recorded `running` with no writer
    // left, then closed as interrupted in the table by the next writing command.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute(
        "INSERT INTO run (command, args, started_at)
         VALUES ('sync', '[]', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-30 minutes'))",
        [],
    )
    .unwrap();
    let killed = conn.last_insert_rowid();
    drop(conn);
    for writer_since in [false, true] {
        if writer_since {
            db.run(&["init"]).expect_code(0);
        }
        let run = db.run(&["status", "--stale-after", "2h"]);
        run.expect_code(1);
        let said = format!(
            "the newest failure: #{killed} sync at {}: its process stopped before recording an \
             outcome",
            db.column(&format!(
                "SELECT started_at FROM run WHERE run_id = {killed}"
            ))[0]
        );
        assert!(run.stderr.contains(&said), "{}", run.stderr);
        let json: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
        assert_eq!(json["last_errors"][0]["run_id"], killed, "{json}");
        assert_eq!(json["last_errors"][0]["outcome"], "interrupted", "{json}");
    }
    assert_eq!(
        db.column(&format!("SELECT outcome FROM run WHERE run_id = {killed}")),
        ["interrupted"]
    );
    db.run(&["status", "--stale-after", "4h"]).expect_code(0);
}

#[test]
fn sync_checks_the_marketo_settings_before_pulling_anything() {
    let db = TestDb::new();
    let run = db.run(&["sync", "--fixtures", &scenario("customer-contact")]);
    run.expect_code(2);
    assert!(run.stderr.contains("marketo.base_url"), "{}", run.stderr);
    assert_eq!(db.count("SELECT count(*) FROM staged_page"), 0);
}

#[test]
fn sync_dry_run_pulls_and_shows_the_push_without_marketo_and_full_sweeps() {
    let db = TestDb::new();
    let run = db.run(&[
        "sync",
        "--dry-run",
        "--fixtures",
        &scenario("customer-contact"),
    ]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("would send opportunities upsert"),
        "{}",
        run.stdout
    );
    assert_eq!(db.count("SELECT count(*) FROM api_call"), 0, "nothing sent");
    assert_eq!(
        db.count("SELECT count(*) FROM opportunity"),
        3,
        "but pulled"
    );
    // --full treats what the pull carries as complete: the other scenario's records go.
    let run = db.run(&[
        "sync",
        "--dry-run",
        "--full",
        "--fixtures",
        &scenario("customer-account"),
    ]);
    run.expect_code(0);
    assert!(
        db.count(
            "SELECT count(*) FROM opportunity WHERE deleted_reason = 'missing from full pull'"
        ) > 0
    );
    assert_eq!(
        db.column("SELECT args FROM run ORDER BY run_id DESC LIMIT 1")[0],
        format!(
            r#"["--fixtures","{}","--full","--dry-run"]"#,
            scenario("customer-account")
        )
    );
}

#[test]
fn push_without_marketo_settings_exits_2_naming_each_one() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    let run = db.run(&["push"]);
    run.expect_code(2);
    for name in [
        "marketo.base_url",
        "marketo.client_id",
        "marketo.client_secret",
    ] {
        assert!(run.stderr.contains(name), "{}", run.stderr);
    }
    let run = db.run_with_env(
        &["push"],
        &[
            ("MARKETO_BASE_URL", "http://marketo.example.invalid"),
            ("MARKETO_CLIENT_ID", "x"),
            ("MARKETO_CLIENT_SECRET", "a-realistic-secret"),
        ],
    );
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("plain http is allowed only to this machine"),
        "{}",
        run.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM api_call"), 0);
}

#[test]
fn a_missing_fixture_folder_exits_2_naming_it() {
    let db = TestDb::new();
    let run = db.run(&["pull", "--fixtures", "no/such/folder"]);
    run.expect_code(2);
    assert!(run.stderr.contains("no/such/folder"), "{}", run.stderr);
}

#[test]
fn a_bad_page_leaves_what_earlier_pulls_staged_untouched() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    let before = db.rows(
        "opportunity_contact_role",
        &["opportunityid".into(), "contactid".into(), "role".into()],
    );
    assert_eq!(before.len(), 3);
    db.run(&["pull", "--fixtures", &scenario("bad-json")])
        .expect_code(1);
    let after = db.rows(
        "opportunity_contact_role",
        &["opportunityid".into(), "contactid".into(), "role".into()],
    );
    assert_eq!(before, after);
    assert_eq!(
        db.count("SELECT count(*) FROM opportunity WHERE name = 'Broken'"),
        0
    );
}

#[test]
fn pulling_the_same_folder_twice_changes_nothing_derived() {
    let db = TestDb::new();
    let columns: Vec<String> = [
        "opportunityid",
        "contactid",
        "role",
        "is_primary",
        "rule",
        "source_id",
    ]
    .map(String::from)
    .into();
    db.run(&["pull", "--fixtures", &scenario("stakeholders")])
        .expect_code(0);
    let first = db.rows("opportunity_contact_role", &columns);
    db.run(&["pull", "--fixtures", &scenario("stakeholders")])
        .expect_code(0);
    assert_eq!(first, db.rows("opportunity_contact_role", &columns));
    assert_eq!(db.count("SELECT count(*) FROM connection"), 16);
}

#[test]
fn explain_shows_roles_sources_and_left_out_contacts() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("stakeholders")])
        .expect_code(0);
    let opp = "a7d3c2b1-2c44-ef11-a316-000d3a5c0001";
    let run = db.run(&["explain", opp]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("rule customer_account"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("role: Technical Buyer for contact"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("connection inactive"), "{}", run.stdout);

    let run = db.run(&["explain", &format!("{{{}}}", opp.to_uppercase()), "--json"]);
    run.expect_code(0);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["opportunityid"], opp);
    assert_eq!(json["account"]["rule"], "customer_account");
    assert_eq!(json["customer"]["resolved_by"], "annotation");
    assert_eq!(json["roles"].as_array().unwrap().len(), 5);
    let reasons: Vec<&str> = json["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    for wanted in [
        "connection inactive",
        "role inactive",
        "contact not staged",
        "role not a stakeholder category (category 1001)",
    ] {
        assert!(
            reasons.contains(&wanted),
            "{wanted} missing from {reasons:?}"
        );
    }
}

#[test]
fn explain_says_why_a_deleted_or_unknown_opportunity_has_no_rows() {
    let db = TestDb::new();
    db.run_in(&fixtures().join("deletes"), &["pull", "--fixtures", "."])
        .expect_code(0);
    let run = db.run(&["explain", "a7d3c2b1-2c44-ef11-a316-000d3a5c0002", "--json"]);
    run.expect_code(0);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        json["out_of_views"]
            .as_str()
            .unwrap()
            .starts_with("deleted in Dynamics"),
        "{json}"
    );
    assert!(json["roles"].as_array().unwrap().is_empty());

    let run = db.run(&["explain", "00000000-0000-0000-0000-000000000000"]);
    run.expect_code(1);
    assert!(run.stderr.contains("is not staged"), "{}", run.stderr);
    // Braces and capitals, as Dynamics shows ids, find the staged one.
    let run = db.run(&["explain", " {A7D3C2B1-2C44-EF11-A316-000D3A5C0002} "]);
    run.expect_code(0);
    // Not a GUID at all (a name, a URL pasted whole): bad usage, saying what an id looks like.
    let run = db.run(&["explain", "Fabrikam - 200 licences"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(
            "\"Fabrikam - 200 licences\" is not an opportunity id: Dynamics ids are GUIDs"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn status_reports_runs_staged_counts_and_rejects() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    db.run(&["pull", "--fixtures", &scenario("bad-records")])
        .expect_code(3);
    let run = db.run(&["status", "--json"]);
    run.expect_code(0);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "status records no run: {runs:?}");
    assert_eq!(runs[0]["outcome"], "done_with_rejects");
    assert_eq!(runs[0]["counts"]["rejected"], 6);
    assert_eq!(runs[1]["outcome"], "done");
    let opportunities = json["staged"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["entity_set"] == "opportunities")
        .unwrap();
    // bad-records' one good opportunity has the id of customer-contact's first: still 3.
    assert_eq!(opportunities["live"], 3);
    // ...and made its customer an account, so its Customer role is no longer derived.
    assert_eq!(json["derived"]["contact_roles"], 2);
    assert_eq!(json["rejected_total"], 6);
    assert_eq!(
        json["pending"]["opportunity"]["create"], 3,
        "nothing pushed yet"
    );
    assert!(json["last_errors"].as_array().unwrap().is_empty());
    db.run(&["pull", "--fixtures", &scenario("bad-json")])
        .expect_code(1);
    let json: Value = serde_json::from_str(&db.run(&["status", "--json"]).stdout).unwrap();
    let error = &json["last_errors"][0];
    assert_eq!(error["command"], "pull");
    assert!(
        error["message"].as_str().unwrap().contains("invalid JSON"),
        "{error}"
    );
}

#[test]
fn quiet_prints_nothing_on_success_and_verbose_lists_pages() {
    let db = TestDb::new();
    let run = db.run(&["-q", "pull", "--fixtures", &scenario("customer-account")]);
    run.expect_code(0);
    assert_eq!(run.stdout, "");
    let run = db.run(&["-v", "pull", "--fixtures", &scenario("customer-account")]);
    assert!(
        run.stdout.contains("accounts.json: accounts 1 staged"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_database_path_that_cannot_be_a_database_file_is_a_usage_error_naming_it() {
    let db = TestDb::new();
    let demo = scenario("demo");
    // A directory where the database file should be: every kind of command refuses it.
    std::fs::create_dir(db.path()).unwrap();
    for args in [
        &["pull", "--fixtures", demo.as_str()][..],
        &["status"],
        &["check"],
    ] {
        let run = db.run(args);
        run.expect_code(2);
        assert!(
            run.stderr.contains("is a directory")
                && run.stderr.contains(&db.path().display().to_string()),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("readable by other users"),
            "{}",
            run.stderr
        );
    }
    let json = db.run(&["pull", "--json", "--fixtures", demo.as_str()]);
    json.expect_code(2);
    let result: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(result["outcome"], "usage_error", "{}", json.stdout);
    // The binary with another --db, run beside the test database.
    let with_db = |path: &std::path::Path, args: &[&str]| {
        crate::util::Run::from(
            std::process::Command::new(BIN)
                .current_dir(db.dir.path())
                .arg("--db")
                .arg(path)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    // A database in a folder that does not exist: a writing command names the folder and
    // creates nothing, the lock file included.
    let folder = db.dir.path().join("missing");
    let run = with_db(
        &folder.join("oppsync.db"),
        &["pull", "--fixtures", demo.as_str()],
    );
    run.expect_code(2);
    assert!(
        run.stderr
            .contains(&format!("folder {} does not exist", folder.display())),
        "{}",
        run.stderr
    );
    assert_eq!(
        crate::util::file_names(db.dir.path()),
        ["oppsync.db"],
        "nothing created beside the database path"
    );
    // A file that is not SQLite (notes given as --db by mistake): refused, left as it was.
    let notes = db.dir.path().join("notes.txt");
    std::fs::write(&notes, "call Fabrikam back on Monday\n").unwrap();
    for args in [&["pull", "--fixtures", demo.as_str()][..], &["status"]] {
        let run = with_db(&notes, args);
        run.expect_code(2);
        assert!(
            run.stderr
                .contains(&format!("{} is not an SQLite database", notes.display())),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "call Fabrikam back on Monday\n"
    );
    assert_eq!(
        crate::util::file_names(db.dir.path()),
        ["notes.txt", "oppsync.db"],
        "no lock file beside it"
    );
}

#[test]
fn a_reader_that_stops_reading_leaves_each_command_to_finish_as_it_would_have() {
    // Each command runs twice, on twin databases: once with its output read, once with stdout
    // a pipe whose reader is gone (as `oppsync status | head -1` leaves it).
    let read = TestDb::new();
    let unread = TestDb::new();
    let demo = fixtures().join("demo").join("1-initial");
    let demo = demo.to_str().unwrap();
    let id = "a7d3c2b1-2c44-ef11-a316-000d3a5c0003";
    for args in [
        &["pull", "--fixtures", demo][..],
        &["status"],
        &["plan"],
        &["explain", id],
        &["plan", "--json"],
    ] {
        let expected = read.run(args);
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = unread
            .command(unread.dir.path(), args, &[])
            .stdout(writer)
            .output()
            .unwrap();
        let run = crate::util::Run::from(output);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
        assert_eq!(run.code, expected.code, "{args:?}: {}", run.stderr);
        assert!(
            !expected.stdout.is_empty(),
            "{args:?} prints something to lose"
        );
    }
    let rows = "SELECT count(*) FROM export_row";
    assert!(read.count(rows) > 0);
    assert_eq!(
        unread.count(rows),
        read.count(rows),
        "the pull finished its work"
    );
}

#[test]
fn the_database_path_can_come_from_the_environment() {
    let db = TestDb::new();
    let status = std::process::Command::new(BIN)
        .current_dir(db.dir.path())
        .env("OPPSYNC_DB", db.path())
        .args(["init"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(db.path().exists());
}

#[test]
fn every_view_reads_in_the_sqlite3_cli_that_users_audit_with() {
    let Ok(version) = std::process::Command::new("sqlite3")
        .arg("--version")
        .output()
    else {
        eprintln!("no sqlite3 on PATH: skipped here; .ci/run installs it so CI always checks");
        return;
    };
    assert!(version.status.success());
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("stakeholders")])
        .expect_code(0);
    let views = db.column("SELECT name FROM sqlite_schema WHERE type = 'view' ORDER BY name");
    assert!(views.len() >= 10, "{views:?}");
    for view in views {
        let output = std::process::Command::new("sqlite3")
            .arg(db.path())
            .arg(format!("SELECT count(*) FROM {view}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{view} fails in {}: {}",
            String::from_utf8_lossy(&version.stdout).trim(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The config in place, the command, the reason it gives for evaluating every export row (None
/// when it says nothing of it), and a line it prints besides.
type Step<'a> = (&'a str, Vec<&'a str>, Option<&'a str>, Option<&'a str>);

#[test]
fn a_full_evaluation_of_the_export_rows_says_why_and_a_partial_refresh_says_nothing() {
    let db = TestDb::new();
    let initial = scenario("demo/1-initial");
    let changes = scenario("demo/2-changes");
    let rules = "[rules]\ncustomer_contact_role = \"Buyer\"\n";
    let announced = "evaluating every export row";
    let steps: [Step; 6] = [
        (
            "",
            vec!["pull", "--fixtures", &initial],
            Some("in full: no complete evaluation is stored yet"),
            None,
        ),
        (
            "",
            vec!["-v", "pull", "--fixtures", &changes],
            None,
            Some("export rows refreshed for "),
        ),
        // With --json the lines go to stderr, and stdout stays one JSON document, -v too.
        (
            rules,
            vec!["-v", "status", "--json"],
            Some("for this command only"),
            None,
        ),
        (
            rules,
            vec!["pull", "--fixtures", &changes],
            Some("in full: the views, the [rules] or [export] settings or the mappings changed"),
            None,
        ),
        (
            rules,
            vec!["pull", "--full", "--fixtures", &initial],
            Some("in full: a full pull asks for one"),
            None,
        ),
        (rules, vec!["plan"], None, None),
    ];
    for (config, args, says, also) in steps {
        std::fs::write(db.dir.path().join("oppsync.toml"), config).unwrap();
        let run = db.run(&args);
        run.expect_code(0);
        let printed = if args.contains(&"--json") {
            let parsed = serde_json::from_str::<Value>(&run.stdout);
            assert!(
                parsed.is_ok(),
                "{args:?}: not one JSON document:\n{}",
                run.stdout
            );
            &run.stderr
        } else {
            &run.stdout
        };
        let lines: Vec<&str> = printed
            .lines()
            .filter(|line| line.contains(announced))
            .collect();
        match says {
            Some(reason) => assert!(
                lines.len() == 1 && lines[0].contains(reason),
                "{args:?} with {config:?} should say {reason:?}:\n{printed}"
            ),
            None => assert!(
                lines.is_empty(),
                "{args:?} with {config:?} evaluated in full:\n{printed}"
            ),
        }
        if let Some(line) = also {
            assert!(
                printed.contains(line),
                "{args:?}: no {line:?} in\n{printed}"
            );
        }
    }
}

#[test]
fn read_only_commands_record_nothing_and_follow_the_current_rules() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    let stored = |sql: &str| db.column(sql).join(",");
    let runs = stored("SELECT run_id FROM run");
    let setting = "SELECT value FROM rule_setting WHERE name = 'customer_contact_role'";
    assert_eq!(stored(setting), "Customer");
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[rules]\ncustomer_contact_role = \"Buyer\"\n",
    )
    .unwrap();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["plan"],
        &["plan", "--json"],
        &["push", "--dry-run"],
    ] {
        db.run(args).expect_code(0);
    }
    let explained = db.run(&["explain", "a7d3c2b1-2c44-ef11-a316-000d3a5c0001", "--json"]);
    explained.expect_code(0);
    assert!(
        explained.stdout.contains("\"Buyer\""),
        "explain reads the current [rules]: {}",
        explained.stdout
    );
    assert!(
        db.run(&["plan", "--json"]).stdout.contains("\"create\""),
        "plan reads the views"
    );
    assert_eq!(stored("SELECT run_id FROM run"), runs, "no run recorded");
    assert_eq!(
        stored(setting),
        "Customer",
        "nothing written to the database"
    );
    let missing = TestDb::new();
    let run = missing.run(&["status"]);
    run.expect_code(2);
    assert!(run.stderr.contains("no database at"), "{}", run.stderr);
    assert!(!missing.path().exists(), "status creates no database");
}

#[test]
fn explain_shows_the_owners_and_the_sales_person_sent_for_each() {
    let db = TestDb::new();
    let demo = fixtures().join("demo").join("1-initial");
    db.run(&["pull", "--fixtures", demo.to_str().unwrap()])
        .expect_code(0);
    let explain = |id: &str| -> Value {
        let run = db.run(&["explain", id, "--json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).unwrap()
    };
    let northwind = explain("a7d3c2b1-2c44-ef11-a316-000d3a5c0003");
    let marco = "8c1f3e7a-2b44-ef11-a316-000d3a5c1e02";
    assert_eq!(northwind["owner"]["owner_name"], "Marco Rossi");
    assert_eq!(northwind["owner"]["rule"], "systemuser");
    assert_eq!(northwind["owner"]["sales_person_id"], marco);
    assert_eq!(northwind["account"]["owner"]["sales_person_id"], marco);
    assert_eq!(
        northwind["roles"][1]["owner"]["owner_name"], "Dana Seller",
        "{northwind}"
    );
    let lost = explain("a7d3c2b1-2c44-ef11-a316-000d3a5c0005");
    assert_eq!(lost["owner"]["rule"], "team");
    assert_eq!(lost["owner"]["owner_name"], "EMEA Sales");
    assert_eq!(lost["owner"]["sales_person_id"], Value::Null);
    let human = db.run(&["explain", "a7d3c2b1-2c44-ef11-a316-000d3a5c0005"]);
    assert!(
        human
            .stdout
            .contains("owner: EMEA Sales (team 9d2a4b6c-2b44-ef11-a316-000d3a5c1e09) -> externalSalesPersonId none"),
        "{}",
        human.stdout
    );
}

#[test]
fn a_pull_exits_3_for_new_rejects_only_and_closes_them_when_the_record_comes_through() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("bad-records")])
        .expect_code(3);
    let run = db.run(&["pull", "--fixtures", &scenario("bad-records")]);
    run.expect_code(0);
    assert!(run.stdout.contains("no new problem"), "{}", run.stdout);
    assert!(run.stderr.contains("0 of them new"), "{}", run.stderr);
    let open = |db: &TestDb| db.count("SELECT count(*) FROM problem WHERE resolved_run IS NULL");
    assert_eq!(open(&db), 6);
    // customer-contact stages a good version of the record rejected for "lots": it closes.
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    assert_eq!(open(&db), 5);
    // The same page with two records mended: they close, the rest stand, nothing is new.
    let fixed = db.dir.path().join("fixed");
    std::fs::create_dir(&fixed).unwrap();
    let text = std::fs::read_to_string(fixtures().join("bad-records/opportunities.json")).unwrap();
    let text = text
        .replace("\"lots\"", "1000")
        .replace("\"new_synctomkto\": \"yes\"", "\"new_synctomkto\": true");
    std::fs::write(fixed.join("opportunities.json"), text).unwrap();
    db.run(&["pull", "--fixtures", fixed.to_str().unwrap()])
        .expect_code(0);
    assert_eq!(open(&db), 4, "the mended records came through");
}

#[test]
fn history_older_than_keep_days_is_pruned_at_the_end_of_a_writing_run() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-contact")])
        .expect_code(0);
    {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at, outcome) VALUES
                 (100, 'push', '[]', '2001-01-01T00:00:00Z', 'done'),
                 (101, 'push', '[]', '2001-01-02T00:00:00Z', 'done'),
                 (102, 'pull', '[]', '2001-01-03T00:00:00Z', 'done'),
                 (103, 'push', '[]', '2001-01-04T00:00:00Z', 'done'),
                 (104, 'push', '[]', '2001-01-05T00:00:00Z', 'done');
             INSERT INTO run (run_id, command, args, started_at, outcome, counts) VALUES
                 (105, 'pull', '[]', '2001-01-06T00:00:00Z', 'done',
                  '{\"pages\":5,\"upserted\":0,\"deleted\":0,\"missing_from_full_pull\":0}'),
                 (106, 'sync', '[]', '2001-01-06T00:00:00Z', 'done',
                  '{\"pull\":{\"upserted\":0,\"deleted\":0,\"missing_from_full_pull\":0},\"push\":{}}'),
                 (107, 'sync', '[]', '2001-01-06T00:00:00Z', 'done',
                  '{\"pull\":{\"upserted\":0,\"deleted\":1,\"missing_from_full_pull\":0},\"push\":{}}'),
                 (108, 'sync', '[]', '2001-01-06T00:00:00Z', 'failed',
                  '{\"upserted\":0,\"deleted\":0,\"missing_from_full_pull\":0}'),
                 (109, 'pull', '[]', '2001-01-06T00:00:00Z', 'done',
                  '{\"upserted\":0,\"deleted\":0,\"missing_from_full_pull\":2}'),
                 (110, 'sync', '[]', '2001-01-07T00:00:00Z', 'done',
                  '{\"pull\":{\"upserted\":0,\"deleted\":0,\"missing_from_full_pull\":0},\"push\":{}}');
             INSERT INTO problem (stage, subject, key, reason, first_run, first_seen, last_run, last_seen, resolved_run)
                 VALUES ('push', 'lead', 'fixed@example.com', '1003 bad', 103, '2001-01-04T00:00:01Z', 103, '2001-01-04T00:00:01Z', 103),
                        ('push', 'lead', 'still@example.com', '1003 bad', 104, '2001-01-05T00:00:01Z', 104, '2001-01-05T00:00:01Z', NULL);
             INSERT INTO api_call (run_id, method, path, records, attempt, duration_ms, at)
                 VALUES (100, 'POST', '/rest/v1/leads.json', 1, 1, 5, '2001-01-01T00:00:01Z');
             INSERT INTO push_outcome (run_id, object, key, action, status, at)
                 VALUES (100, 'lead', 'a@example.com', 'create', 'created', '2001-01-01T00:00:01Z');
             INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
                 VALUES ('lead', 'a@example.com', '{}', '1', 101, '2001-01-02T00:00:01Z');
             INSERT INTO staged_page (run_id, source, entity_set, status, staged_at)
                 VALUES (102, 'contacts.json', 'contacts', 'staged', '2001-01-03T00:00:01Z');
             INSERT INTO rejected_record (run_id, source, position, entity_set, reason, raw)
                 VALUES (102, 'contacts.json', 0, 'contacts', 'no contactid', '{}');
             INSERT INTO mkto_refused (object, key, payload, reason, refused_at) VALUES
                 ('lead', 'gone@example.com', '{}', '1003 bad', '2001-01-01T00:00:01Z'),
                 ('lead', 'held@example.com', '{}', '1003 bad', strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-2 days'));
             INSERT INTO marketo_sample (sample_id, run_id, sampled_at) VALUES
                 (1, 102, '2001-01-01T00:00:00Z'), (2, 102, '2001-01-02T00:00:00Z'),
                 (3, 102, '2001-01-03T00:00:00Z');",
        )
        .unwrap();
    }
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[history]\nkeep_days = 30\n",
    )
    .unwrap();
    db.run(&["init"]).expect_code(0);
    assert_eq!(
        db.count("SELECT count(*) FROM api_call WHERE run_id = 100"),
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM push_outcome WHERE run_id = 100"),
        0
    );
    assert_eq!(
        db.column("SELECT run_id FROM run WHERE run_id BETWEEN 100 AND 104 ORDER BY run_id"),
        ["101", "102", "104"],
        "an old push whose acknowledgement stands, an old pull, and an old push whose problem \
         stands, stay; the push whose problem was resolved long ago goes with it"
    );
    assert_eq!(
        db.column("SELECT key FROM problem WHERE key LIKE '%@example.com' ORDER BY key"),
        ["still@example.com"],
        "a problem resolved long ago goes, a standing one stays however old"
    );
    assert_eq!(
        db.column("SELECT run_id FROM run WHERE run_id BETWEEN 105 AND 110 ORDER BY run_id"),
        ["107", "108", "109", "110"],
        "an old pull and an old sync that staged nothing go; one that deleted or swept a \
         record, a sync whose counts are not a finished cycle's, and the last successful \
         sync (which `status` shows), however old, stay"
    );
    assert_eq!(
        db.count(
            "SELECT (SELECT count(*) FROM staged_page WHERE run_id = 102)
                  + (SELECT count(*) FROM rejected_record WHERE run_id = 102)"
        ),
        0,
        "the old pull's pages and rejects are pruned"
    );
    assert!(
        db.count("SELECT count(*) FROM staged_page") > 0,
        "the recent pull's pages stay"
    );
    assert_eq!(
        db.column("SELECT key FROM mkto_refused"),
        ["held@example.com"],
        "an old refusal goes, a recent one stays"
    );
    assert_eq!(
        db.column("SELECT sample_id FROM marketo_sample"),
        ["3"],
        "old samples go but the last, which times the next"
    );
    assert!(
        db.count("SELECT count(*) FROM run WHERE run_id < 100 OR run_id > 102") >= 2,
        "recent runs stay"
    );
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[history]\nkeep_days = 0\n",
    )
    .unwrap();
    let run = db.run(&["init"]);
    run.expect_code(2);
    assert!(run.stderr.contains("history.keep_days"), "{}", run.stderr);
}

#[test]
fn old_pulls_and_syncs_that_failed_before_staging_anything_are_pruned() {
    let db = TestDb::new();
    let config = db.dir.path().join("oppsync.toml");
    let quick = "[dynamics]\nretry_base_ms = 5\nmax_attempts = 1\n\
                 [marketo]\nretry_base_ms = 5\nmax_attempts = 1\n";
    std::fs::write(&config, quick).unwrap();
    // Nothing listens on port 1: Dynamics and Marketo are both unreachable.
    let mut env = marketo_env("http://127.0.0.1:1").to_vec();
    env.extend([
        ("DYNAMICS_URL", "http://127.0.0.1:1"),
        ("DYNAMICS_TOKEN_URL", "http://127.0.0.1:1/token"),
        ("DYNAMICS_CLIENT_ID", "oppsync-sim"),
        ("DYNAMICS_CLIENT_SECRET", "oppsync-sim-secret"),
    ]);
    db.run_with_env(&["sync"], &env).expect_code(1);
    db.run_with_env(&["pull"], &env).expect_code(1);
    let mut bad = env.clone();
    bad.push(("DYNAMICS_PAGE_SIZE", "0"));
    db.run_with_env(&["sync"], &bad).expect_code(2);
    db.run_with_env(&["pull"], &bad).expect_code(2);
    // This one stages the scenario's records, then cannot reach Marketo.
    db.run_with_env(&["sync", "--fixtures", &scenario("customer-contact")], &env)
        .expect_code(1);
    assert_eq!(
        db.column("SELECT outcome || ' ' || json_extract(counts, '$.pull.upserted') FROM run WHERE command = 'sync' ORDER BY run_id"),
        ["failed 0", "usage_error 0", "failed 7"],
        "a failed sync's counts say what its pull staged, nested as a finished cycle's"
    );
    assert_eq!(
        db.column("SELECT outcome || ' ' || json_extract(counts, '$.upserted') FROM run WHERE command = 'pull' ORDER BY run_id"),
        ["failed 0", "usage_error 0"]
    );
    db.age_runs();
    std::fs::write(&config, format!("{quick}[history]\nkeep_days = 30\n")).unwrap();
    db.run(&["init"]).expect_code(0);
    assert_eq!(
        db.column("SELECT command || ' ' || outcome FROM run WHERE command <> 'init'"),
        ["sync failed"],
        "the old runs that staged nothing go; the sync that staged records stays, as they \
         refer to it"
    );
}

#[test]
fn the_deployment_files_run_sync_every_and_the_unit_verifies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let unit = std::fs::read_to_string(root.join("oppsync.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/oppsync sync --every 5m"),
        "{unit}"
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "StateDirectory=oppsync",
        "UMask=0077",
        "RestartPreventExitStatus=2",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let env = std::fs::read_to_string(root.join("oppsync.env.example")).unwrap();
    for setting in ["MARKETO_CLIENT_SECRET=", "DYNAMICS_CLIENT_SECRET="] {
        assert!(env.contains(setting), "{setting}");
    }
    assert!(
        std::fs::read_to_string(root.join("oppsync.cron"))
            .unwrap()
            .contains("oppsync -q sync")
    );
    assert!(
        std::fs::read_to_string(root.join("oppsync-stale.cron"))
            .unwrap()
            .contains(
                "oppsync --db /var/lib/oppsync/oppsync.db status --stale-after 1h > /dev/null"
            )
    );
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("no systemd-analyze: the unit is not verified here");
        return;
    };
    assert!(version.status.success());
    // Verified as installed, but with this build as the binary and the secrets file optional.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("oppsync.service");
    std::fs::write(
        &local,
        unit.replace("/usr/local/bin/oppsync", BIN).replace(
            "EnvironmentFile=/etc/oppsync/oppsync.env",
            "EnvironmentFile=-/etc/oppsync/oppsync.env",
        ),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    // It exits 0 on what it merely warns about (an unknown Type=, say): no warning either.
    let warnings = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && warnings.trim().is_empty(),
        "systemd-analyze verify: {warnings}"
    );
}

#[test]
fn verify_checks_the_export_rows_against_the_views_and_names_a_row_that_drifted() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("stakeholders")])
        .expect_code(0);
    let run = db.run(&["verify"]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains("stored export rows equal a fresh evaluation")
            || run
                .stdout
                .contains("stored export rows equal a fresh evaluation"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let key: String = {
        let conn = rusqlite::Connection::open(db.path()).unwrap();
        let key = conn
            .query_row(
                "SELECT key FROM export_row WHERE object = 'opportunity' ORDER BY key LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            "UPDATE export_row SET payload = '{}' WHERE object = 'opportunity' AND key = ?1",
            [&key],
        )
        .unwrap();
        key
    };
    let run = db.run(&["verify", "--json"]);
    run.expect_code(1);
    let json: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    let differences = json["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 2, "{differences:?}");
    assert!(differences.iter().all(|d| d["key"] == key.as_str()));
    assert!(run.stderr.contains("pull --full"), "{}", run.stderr);
    // pull --full evaluates them in full again.
    db.run(&["pull", "--fixtures", &scenario("stakeholders"), "--full"])
        .expect_code(0);
    db.run(&["verify"]).expect_code(0);
}

#[test]
fn read_only_commands_read_the_export_rows_as_of_the_last_refresh_while_a_pull_is_unfinished() {
    let db = TestDb::new();
    db.run(&["pull", "--fixtures", &scenario("customer-account")])
        .expect_code(0);
    let creates = |db: &TestDb| -> Value {
        let run = db.run(&["plan", "--json"]);
        run.expect_code(0);
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        json["objects"]["opportunity"]["create"].clone()
    };
    let before = creates(&db);
    // A pull that stages one new opportunity, then fails on its next page before refreshing.
    let pages = one_opportunity_then_a_broken_page(&db, "Staged, not refreshed");
    db.run(&["pull", "--fixtures", pages.to_str().unwrap()])
        .expect_code(1);
    assert_eq!(
        creates(&db),
        before,
        "read-only commands read the rows of the last refresh"
    );
    let run = db.run(&["verify"]);
    run.expect_code(0);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("not current"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    // The next writing command refreshes them: the staged opportunity is planned.
    db.run(&["pull", "--fixtures", &scenario("customer-account")])
        .expect_code(0);
    assert_eq!(creates(&db), before.as_u64().unwrap() + 1);
    db.run(&["verify"]).expect_code(0);
}

#[test]
fn a_first_pull_stopped_midway_leaves_its_indexes_aside_and_the_next_pull_builds_them() {
    let db = TestDb::new();
    let pages = one_opportunity_then_a_broken_page(&db, "Staged first");
    let index = |name: &str| {
        db.count(&format!(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{name}'"
        ))
    };
    let lookups = [
        "opportunity_by_customer",
        "opportunity_by_owner",
        "opportunity_by_parentaccount",
    ];
    db.run(&["pull", "--fixtures", pages.to_str().unwrap()])
        .expect_code(1);
    for name in lookups {
        assert_eq!(index(name), 0, "{name}: the empty table filled without it");
    }
    // A table the pull staged nothing into keeps its indexes.
    assert_eq!(index("contact_by_parent"), 1);
    let aside = db.count("SELECT count(*) FROM staging_index_aside");
    assert!(aside >= lookups.len() as i64, "{aside}");
    assert_eq!(
        db.count("SELECT count(*) FROM staging_index_aside WHERE sql LIKE '% ON opportunity (%'"),
        aside,
        "only the table the pull filled"
    );
    // Read-only commands read the staged records all the same.
    let run = db.run(&["explain", "0b0b0b0b-2c44-ef11-a316-000d3a5c0099"]);
    run.expect_code(0);
    assert!(run.stdout.contains("Staged first"), "{}", run.stdout);
    db.run(&["pull", "--fixtures", &scenario("customer-account")])
        .expect_code(0);
    for name in lookups {
        assert_eq!(index(name), 1, "{name}: built by the next pull's refresh");
    }
    assert_eq!(db.count("SELECT count(*) FROM staging_index_aside"), 0);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM export_row
             WHERE object = 'opportunity' AND key = '0b0b0b0b-2c44-ef11-a316-000d3a5c0099'"
        ),
        1
    );
    db.run(&["verify"]).expect_code(0);
}

/// Pages of a generated org in `dir`: `n` accounts, `n` contacts each of an account, and `n`
/// opportunities, each with a contact as its customer and an account as its parent, in pages of
/// 5000, so that evaluating its export rows takes a while.
fn generated_org(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let id = |kind: u32, i: usize| format!("{kind:08x}-2c44-ef11-a316-{i:012x}");
    let page = |set: &str, records: Vec<Value>| {
        json!({
            "@odata.context": format!("https://org.invalid/api/data/v9.2/$metadata#{set}"),
            "value": records,
        })
    };
    for (at, first) in (0..n).step_by(5000).enumerate() {
        let range = first..(first + 5000).min(n);
        let accounts = range
            .clone()
            .map(|i| json!({"accountid": id(1, i), "name": format!("Account {i}")}));
        let contacts = range.clone().map(|i| {
            json!({
                "contactid": id(2, i), "firstname": "Pat", "lastname": format!("Contact {i}"),
                "emailaddress1": format!("pat.{i}@example.com"),
                "_parentcustomerid_value": id(1, i),
                "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "account",
            })
        });
        let opportunities = range.map(|i| {
            json!({
                "opportunityid": id(3, i), "name": format!("Deal {i}"), "estimatedvalue": i,
                "_customerid_value": id(2, i),
                "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
                "_parentaccountid_value": id(1, i),
            })
        });
        for (set, records) in [
            ("accounts", accounts.collect::<Vec<_>>()),
            ("contacts", contacts.collect()),
            ("opportunities", opportunities.collect()),
        ] {
            let text = page(set, records).to_string();
            std::fs::write(dir.join(format!("{set}-{at:03}.json")), text).unwrap();
        }
    }
}

#[test]
fn a_first_pull_killed_while_it_holds_the_database_is_rolled_back_by_the_next_pull() {
    use std::io::BufRead;
    let db = TestDb::new();
    let pages = db.dir.path().join("org");
    generated_org(&pages, 40_000);
    let mut child = db
        .command(
            db.dir.path(),
            &["-v", "pull", "--fixtures", pages.to_str().unwrap()],
            &[],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Progress lines go to stdout off a terminal.
    let said = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in said.lines() {
        let line = line.unwrap();
        // The leads' rows outgrow SQLite's page cache, which spills them into the database.
        let spilled = line.contains("evaluated and stored mkto_lead");
        seen.push(line);
        if spilled {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, in the middle of the evaluation
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("rollback-journal mode")),
        "the first evaluation did not hold the database: {seen:#?}"
    );
    // A hot journal: its header's magic number is written before the first page is written in
    // place, and the journal is deleted at the commit.
    let journal = PathBuf::from(format!("{}-journal", db.path().display()));
    let header =
        std::fs::read(&journal).expect("killed after the evaluation committed; grow the org");
    assert_eq!(
        header[..8],
        [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]
    );

    // A read-only command does not read around the journal, and says what to do.
    let run = db.run(&["status"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("has a write to roll back"),
        "{}",
        run.stderr
    );

    let run = db.run(&["-v", "pull", "--fixtures", pages.to_str().unwrap()]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("no complete evaluation is stored yet"),
        "{}",
        run.stdout
    );
    assert!(!journal.exists());
    assert_eq!(
        db.count("SELECT count(*) FROM export_row WHERE object = 'opportunity'"),
        40_000
    );
    db.run(&["verify"]).expect_code(0);
    db.run(&["status"]).expect_code(0);
    let mode: String = rusqlite::Connection::open(db.path())
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Runs `sync --every 1h --dry-run` over `pages`, sends SIGTERM at the first progress line
/// containing `at`, and returns its exit code and every line it printed.
fn sync_stopped_at(db: &TestDb, pages: &std::path::Path, at: &str) -> (Option<i32>, Vec<String>) {
    use std::io::BufRead;
    let args = [
        "-v",
        "sync",
        "--every",
        "1h",
        "--dry-run",
        "--fixtures",
        pages.to_str().unwrap(),
    ];
    let mut child = db
        .command(db.dir.path(), &args, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let reached = line.contains(at);
        seen.push(line);
        if reached {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            break;
        }
    }
    seen.extend(lines.map(Result::unwrap));
    (child.wait().unwrap().code(), seen)
}

#[test]
fn a_stop_during_a_full_evaluation_interrupts_it_and_the_next_run_does_it_again() {
    let db = TestDb::new();
    let pages = db.dir.path().join("org");
    generated_org(&pages, 10_000);
    let stopped = |seen: &[String]| {
        seen.iter().any(|l| {
            l.contains("cycle 1: ")
                && l.contains("stopped on request (SIGTERM or SIGINT) while evaluating every export row, left undone")
        })
    };

    // The first evaluation, held in rollback-journal mode, is rolled back whole.
    let (code, seen) = sync_stopped_at(&db, &pages, "rollback-journal mode");
    assert_eq!(code, Some(0), "{seen:#?}");
    assert!(stopped(&seen), "the evaluation ran to its end: {seen:#?}");
    assert_eq!(db.count("SELECT built FROM export_state"), 0);
    assert_eq!(db.count("SELECT count(*) FROM export_row"), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM opportunity"),
        10_000,
        "what was staged before the stop stays"
    );
    let message = db.column("SELECT message FROM run ORDER BY run_id DESC LIMIT 1");
    assert!(message[0].contains("left undone"), "{message:?}");

    let fixtures = ["--fixtures", pages.to_str().unwrap()];
    let again = |db: &TestDb| {
        let run = db.run(
            &[
                &["sync", "--every", "1s", "--max-cycles", "1", "--dry-run"][..],
                &fixtures[..],
            ]
            .concat(),
        );
        run.expect_code(0);
        assert!(
            run.stdout.contains("no complete evaluation is stored yet"),
            "{}",
            run.stdout
        );
        assert_eq!(db.count("SELECT built FROM export_state"), 1);
        db.run(&["verify"]).expect_code(0);
    };
    again(&db);

    // Any later one commits after each export view, in WAL mode: what it committed stays, but
    // not `built`, and the indexes it set aside are built by the next one.
    std::fs::write(
        db.dir.path().join("oppsync.toml"),
        "[rules]\ncustomer_contact_role = \"Buyer\"\n",
    )
    .unwrap();
    let (code, seen) = sync_stopped_at(&db, &pages, "evaluated and stored mkto_company");
    assert_eq!(code, Some(0), "{seen:#?}");
    assert!(stopped(&seen), "the evaluation ran to its end: {seen:#?}");
    assert_eq!(db.count("SELECT built FROM export_state"), 0);
    assert!(db.count("SELECT count(*) FROM export_index_aside") > 0);
    again(&db);
    assert_eq!(db.count("SELECT count(*) FROM export_index_aside"), 0);
}
