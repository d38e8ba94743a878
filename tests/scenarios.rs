//! Data-driven rule and staging scenarios: each `fixtures/<scenario>/` folder with an
//! `expected/` folder beside its pages is one case.
//!
//! - `expected/steps` (optional): one oppsync run per line, `<exit code> <arguments>`, run with
//!   the scenario folder as working directory; default `0 pull --fixtures .`.
//! - `expected/<relation>.tsv`: a header of column names, then the rows `SELECT <columns> FROM
//!   <relation>` must return after the last step, in any order; `NULL` for null.
//! - `expected/stderr` (optional): lines the last step's standard error must contain.
//!
//! Adding a scenario means adding a folder; nothing here changes.

use std::path::Path;

use crate::util::{TestDb, fixtures};

#[test]
fn every_fixture_scenario_produces_its_expected_rows() {
    let mut scenarios: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected").is_dir())
        .collect();
    scenarios.sort();
    assert!(
        scenarios.len() >= 12,
        "expected the rule scenarios under fixtures/, found {scenarios:?}"
    );
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|dir| check(dir).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn check(dir: &Path) -> Result<(), String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let expected = dir.join("expected");
    let steps = std::fs::read_to_string(expected.join("steps"))
        .unwrap_or_else(|_| "0 pull --fixtures .\n".into());
    let db = TestDb::new();
    let mut last = None;
    for line in steps.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let code: i32 = words
            .next()
            .unwrap()
            .parse()
            .map_err(|_| format!("{name}: bad steps line {line:?}"))?;
        let args: Vec<&str> = words.collect();
        let run = db.run_in(dir, &args);
        if run.code != code {
            return Err(format!(
                "{name}: `oppsync {}` exited {} instead of {code}\nstdout:\n{}stderr:\n{}",
                args.join(" "),
                run.code,
                run.stdout,
                run.stderr
            ));
        }
        last = Some(run);
    }
    let last = last.ok_or_else(|| format!("{name}: no steps"))?;
    if let Ok(wanted) = std::fs::read_to_string(expected.join("stderr")) {
        for line in wanted.lines().filter(|l| !l.is_empty()) {
            if !last.stderr.contains(line) {
                return Err(format!("{name}: stderr lacks {line:?}:\n{}", last.stderr));
            }
        }
    }
    let mut tables: Vec<_> = std::fs::read_dir(&expected)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
        .collect();
    tables.sort();
    if tables.is_empty() {
        return Err(format!("{name}: expected/ holds no .tsv file"));
    }
    for table in tables {
        let relation = table.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&table).unwrap();
        let mut lines = text.lines();
        let columns: Vec<String> = lines
            .next()
            .unwrap()
            .split('\t')
            .map(str::to_string)
            .collect();
        let mut want: Vec<Vec<String>> = lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        want.sort();
        let got = db.rows(&relation, &columns);
        if got != want {
            return Err(format!(
                "{name}: {relation} ({})\n  expected:\n{}\n  got:\n{}",
                columns.join(", "),
                render(&want),
                render(&got)
            ));
        }
    }
    Ok(())
}

fn render(rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "    (no rows)".to_string();
    }
    rows.iter()
        .map(|r| format!("    {}", r.join(" | ")))
        .collect::<Vec<_>>()
        .join("\n")
}
