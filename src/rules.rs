//! Installs the rule views of `sql/views/` and the `[rules]` settings they read.
//!
//! Views are code, not data: they are dropped and re-created in file order inside one
//! transaction on every run, so a rule change never needs a migration. This module writes no
//! staged data; its only rows are the settings in `rule_setting`.

use anyhow::{Context, Result};
use rusqlite::{Connection, params};

use crate::config::RulesConfig;
use crate::sql::VIEWS;

/// Re-creates every view and stores the rule settings, atomically.
pub(crate) fn install(conn: &mut Connection, rules: &RulesConfig) -> Result<()> {
    let tx = conn.transaction()?;
    for file in VIEWS.iter().rev() {
        tx.execute_batch(&format!("DROP VIEW IF EXISTS \"{}\";", file.view_name()))
            .with_context(|| format!("dropping the view of {}", file.path))?;
    }
    for file in VIEWS {
        tx.execute_batch(file.text)
            .with_context(|| format!("creating view from {}", file.path))?;
    }
    tx.execute("DELETE FROM rule_setting", [])?;
    let categories = serde_json::to_string(&rules.stakeholder_categories)?;
    let mut insert = tx.prepare("INSERT INTO rule_setting (name, value) VALUES (?1, ?2)")?;
    insert.execute(params![
        "customer_contact_role",
        rules.customer_contact_role
    ])?;
    insert.execute(params![
        "stakeholder_default_role",
        rules.stakeholder_default_role
    ])?;
    insert.execute(params!["stakeholder_categories", categories])?;
    drop(insert);
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
