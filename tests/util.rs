//! Running the real binary in a throwaway directory, and reading its database back.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rusqlite::types::ValueRef;

pub const BIN: &str = env!("CARGO_BIN_EXE_oppsync");

/// Whether oppsync reads environment variable `name`: every setting has one (MARKETO_*,
/// DYNAMICS_*, OPPSYNC_*, as the README's Configuration says). Each is removed from the
/// commands tests run, so that tests are hermetic.
fn is_setting(name: &str) -> bool {
    ["MARKETO_", "DYNAMICS_", "OPPSYNC_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// The names of the entries of `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The Marketo settings for the simulator (or a stand-in) at `url`, with the simulator's own
/// credentials.
pub fn marketo_env(url: &str) -> [(&'static str, &str); 3] {
    [
        ("MARKETO_BASE_URL", url),
        ("MARKETO_CLIENT_ID", "oppsync-sim"),
        ("MARKETO_CLIENT_SECRET", "oppsync-sim-secret"),
    ]
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A temporary directory with a database path in it.
pub struct TestDb {
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("oppsync.db")
    }

    /// Runs `oppsync --db <this db> ARGS` with `cwd` as working directory.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Run {
        Run::from(self.command(cwd, args, &[]).output().unwrap())
    }

    /// Runs with extra environment variables (in the database's directory).
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::from(self.command(self.dir.path(), args, env).output().unwrap())
    }

    /// The command, with the environment cleared of every setting oppsync reads.
    pub fn command(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(BIN);
        command
            .current_dir(cwd)
            .arg("--db")
            .arg(self.path())
            .args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_setting) {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied());
        command
    }

    /// Runs in the database's own directory (so no stray oppsync.toml is picked up).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(self.dir.path(), args)
    }

    /// `sync --every 1s --max-cycles CYCLES --fixtures FIXTURES` against the Marketo at
    /// `marketo_url` (`marketo_env`).
    pub fn sync_every_second(&self, cycles: &str, fixtures: &str, marketo_url: &str) -> Run {
        let args = [
            "sync",
            "--every",
            "1s",
            "--max-cycles",
            cycles,
            "--fixtures",
            fixtures,
        ];
        self.run_with_env(&args, &marketo_env(marketo_url))
    }

    /// The rows of `SELECT columns FROM relation`, as text, sorted.
    pub fn rows(&self, relation: &str, columns: &[String]) -> Vec<Vec<String>> {
        let conn = rusqlite::Connection::open(self.path()).unwrap();
        let sql = format!("SELECT {} FROM {relation}", columns.join(", "));
        let mut stmt = conn.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = columns.len();
        let mut rows: Vec<Vec<String>> = stmt
            .query_map([], |row| (0..n).map(|i| row.get_ref(i).map(show)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        rows
    }

    /// The first column of a query, as text, in the query's order.
    pub fn column(&self, sql: &str) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.path()).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |row| row.get_ref(0).map(show))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// `count`, or `None` while the database is not there yet or is being created (for polling
    /// a process that creates it).
    pub fn try_count(&self, sql: &str) -> Option<i64> {
        let conn = rusqlite::Connection::open(self.path()).ok()?;
        conn.query_row(sql, [], |r| r.get(0)).ok()
    }

    /// Dates every run back to 2001, older than any `[history] keep_days`, so that the next
    /// writing run prunes them.
    pub fn age_runs(&self) {
        let conn = rusqlite::Connection::open(self.path()).unwrap();
        conn.execute("UPDATE run SET started_at = '2001-01-01T00:00:00Z'", [])
            .unwrap();
    }

    pub fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.path()).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn show(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => format!("{f:?}"),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A simulator (`oppsync sim ...`) as a child process on a free port; killed when dropped.
pub struct SimProcess {
    child: Child,
    pub url: String,
}

impl SimProcess {
    /// Starts `oppsync ARGS` and reads the URL from its first line, `... listening on URL`.
    pub fn start(args: &[&str]) -> SimProcess {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep draining, so the simulator never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = line.trim().rsplit(' ').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        SimProcess { child, url }
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let mut response = ureq::get(&format!("{}{path}", self.url)).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let mut response = ureq::post(&format!("{}{path}", self.url))
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
