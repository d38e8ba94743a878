//! `oppsync init`: the database is created or migrated by opening it; say where it is.

use anyhow::Result;

use super::Context;
use crate::exit::Outcome;

pub(crate) fn run(ctx: &mut Context) -> Result<Outcome> {
    let version: i64 = ctx
        .conn
        .pragma_query_value(None, "user_version", |row| row.get(0))?;
    let path = ctx.conn.path().unwrap_or("(memory)").to_string();
    ctx.say(format!(
        "database {path} is ready (schema version {version})"
    ));
    Ok(Outcome::Done)
}
