//! Installs the rule views of `sql/views/` and the `[rules]` settings they read.
//!
//! Views are code, not data: they are dropped and re-created in file order inside one
//! transaction on every writing run, so a rule change never needs a migration; read-only runs
//! create them as temporary views of their own connection instead. This module writes no
//! staged data; its only rows are the settings in `rule_setting`.

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

use crate::config::{ExportConfig, RulesConfig};
use crate::sql::VIEWS;

/// Re-creates every view and stores the rule settings, atomically.
pub(crate) fn install(
    conn: &mut Connection,
    rules: &RulesConfig,
    export: &ExportConfig,
) -> Result<()> {
    let tx = conn.transaction()?;
    for file in VIEWS.iter().rev() {
        tx.execute_batch(&format!(
            "DROP VIEW IF EXISTS main.\"{}\";",
            file.view_name()
        ))
        .with_context(|| format!("dropping the view of {}", file.path))?;
    }
    for file in VIEWS {
        tx.execute_batch(file.text)
            .with_context(|| format!("creating view from {}", file.path))?;
    }
    tx.execute("DELETE FROM main.rule_setting", [])?;
    store_settings(&tx, "main", rules, export)?;
    tx.commit()?;
    Ok(())
}

/// For a connection that may not write the database (`status`, `plan`, `explain`, `push
/// --dry-run`): the same views and settings as temporary objects of this connection, which
/// SQLite resolves before the stored ones, so that a read-only command reflects the current
/// `[rules]` even when the stored views are older. Nothing is written to the database file.
pub(crate) fn install_temporary(
    conn: &mut Connection,
    rules: &RulesConfig,
    export: &ExportConfig,
) -> Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS rule_setting (name TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;
         DELETE FROM temp.rule_setting;",
    )?;
    create_temporary_views(&tx)?;
    store_settings(&tx, "temp", rules, export)?;
    tx.commit()?;
    Ok(())
}

/// The views as temporary views of this connection (after `export_rows` evaluated them into
/// temp tables of the same names, too).
pub(crate) fn create_temporary_views(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    for file in VIEWS {
        tx.execute_batch(&file.created_as("TEMP VIEW"))
            .with_context(|| format!("creating view from {}", file.path))?;
    }
    Ok(())
}

/// The `[rules]` and `[export]` settings, as the views read them.
fn store_settings(
    tx: &rusqlite::Transaction<'_>,
    schema: &str,
    rules: &RulesConfig,
    export: &ExportConfig,
) -> Result<()> {
    let categories = serde_json::to_string(&rules.stakeholder_categories)?;
    let mut insert = tx.prepare(&format!(
        "INSERT INTO {schema}.rule_setting (name, value) VALUES (?1, ?2)"
    ))?;
    insert.execute(params![
        "customer_contact_role",
        rules.customer_contact_role
    ])?;
    insert.execute(params![
        "stakeholder_default_role",
        rules.stakeholder_default_role
    ])?;
    insert.execute(params!["stakeholder_categories", categories])?;
    for (name, value) in export.settings() {
        insert.execute(params![name, value])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
