//! Opening the database file: pragmas on every connection, schema migrations, and the writer lock.
//!
//! This module owns the file and its schema version; it does not know what the tables mean.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::Connection;

use crate::sql::MIGRATIONS;

/// Opens (creating if needed) the database at `path` and migrates it to the current schema.
pub fn open(path: &Path) -> Result<Connection> {
    let mut conn =
        Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    configure(&conn).with_context(|| format!("configuring database {}", path.display()))?;
    migrate(&mut conn).with_context(|| format!("migrating database {}", path.display()))?;
    Ok(conn)
}

/// Pragmas set on every connection, outside migrations.
pub(crate) fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL lets `status` and `sqlite3` read while a pull writes.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Applies the migrations the database has not seen, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        bail!(
            "the database is at schema version {current}, newer than this oppsync knows ({}); \
             use a newer oppsync",
            MIGRATIONS.len()
        );
    }
    for (index, file) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated between our read and this transaction.
        let now: usize = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if now > index {
            continue;
        }
        tx.execute_batch(file.text)
            .with_context(|| format!("applying {}", file.path))?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Held by a command that writes staged or pushed state, so that two oppsync processes never
/// interleave their writes to one database. The OS releases it when the process dies.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// Takes the lock beside `db` or fails at once, naming the lock file.
    pub fn acquire(db: &Path) -> Result<WriterLock> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(WriterLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => bail!(
                "another oppsync process is writing {} (lock {} is held); wait for it to finish",
                db.display(),
                path.display()
            ),
            Err(TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_last_version_and_rerun_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(format!("{err:#}").contains("newer than this oppsync knows"));
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = WriterLock::acquire(&db).unwrap();
        let err = WriterLock::acquire(&db).unwrap_err();
        assert!(format!("{err:#}").contains("another oppsync process is writing"));
        drop(first);
        WriterLock::acquire(&db).unwrap();
    }
}
