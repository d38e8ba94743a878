//! The baseline of `tests/bench/stage_vs_json_each.sh`: stages Web API pages with SQLite's own
//! `json_each`, through the same bundled SQLite oppsync uses, one transaction per page, each
//! page's text bound as `?1` to the statements `tests/bench/json_each_ingest.py` wrote.
//!
//! usage: cargo run --release --example json_each_ingest -- DB MANIFEST

#![allow(clippy::unwrap_used, clippy::expect_used)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (db, manifest) = (&args[1], &args[2]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).expect("manifest")).unwrap();
    let mut conn = rusqlite::Connection::open(db).expect("database");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute(
        "INSERT OR IGNORE INTO run (run_id, command, args, started_at) VALUES (1, 'json_each', '[]', 'now')",
        [],
    )
    .unwrap();
    for page in manifest.as_array().unwrap() {
        let text = std::fs::read_to_string(page["page"].as_str().unwrap()).unwrap();
        let tx = conn.transaction().unwrap();
        for statement in page["statements"].as_array().unwrap() {
            let sql = statement.as_str().unwrap();
            let mut stmt = tx.prepare_cached(sql).unwrap();
            if sql.contains("?1") {
                stmt.execute([&text]).unwrap();
            } else {
                stmt.execute([]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}
