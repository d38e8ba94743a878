//! Opening the database file: pragmas on every connection, schema migrations, and the writer lock.
//!
//! This module owns the file and its schema version; it does not know what the tables mean.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::exit::usage;
use crate::sql::{MIGRATIONS, SqlFile};

/// Opens (creating if needed) the database at `path` and migrates it to the current schema.
///
/// The database holds every contact's name and email: a new one is created readable by its
/// owner only (SQLite gives its `-wal` and `-shm` files the database's mode), and an existing
/// one readable by other users draws a warning.
pub fn open(path: &Path) -> Result<Connection> {
    create_private(path).with_context(|| format!("creating database {}", path.display()))?;
    warn_if_shared(path);
    let mut conn =
        Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    configure(&conn).with_context(|| format!("configuring database {}", path.display()))?;
    migrate(&mut conn).with_context(|| format!("migrating database {}", path.display()))?;
    crate::stop::watch(&mut conn)?;
    Ok(conn)
}

/// SQLite's page cache per connection, in KiB when negative: 8 MiB instead of the default 2,
/// because refreshing the export rows and recording acknowledgements touch B-trees of millions
/// of rows in random key order (a 1% delta pull at 1M opportunities: 14.6 s with 2 MiB, 9.4 s
/// with 8; 32 MiB was no faster and took the pull's peak RSS past 100 MB).
const CACHE_SIZE: i64 = -8 * 1024;

/// The page size of a new database: 8 KiB instead of SQLite's 4. The first full evaluation of
/// the export rows at 1M opportunities wrote half as many WAL frames, each of them looked up and
/// copied (58 s with 4 KiB pages, 50 s with 8, 49 s with 16), and staging was no slower (76 s
/// with 4 KiB, 71 s with 8, 84 s with 16). An existing database keeps the page size it has.
const PAGE_SIZE: i64 = 8 * 1024;

/// Refuses a database path that cannot name a database file, before anything is created beside
/// it (the writer lock is a file next to it): a directory or another kind of file, and, for a
/// command that writes (`writes`), a file in a folder that does not exist or an existing file
/// this user may not write. SQLite's own errors for these ("unable to open database file",
/// "attempt to write a readonly database", after it has left `-wal` and `-shm` files the owner
/// may then not write either) name no cause.
pub fn check_path(path: &Path, writes: bool) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(usage(format!(
            "database path {} is a directory; --db names the database file, e.g. --db {}",
            path.display(),
            path.join("oppsync.db").display()
        ))),
        Ok(meta) if !meta.is_file() => Err(usage(format!(
            "database path {} is not a regular file; --db names the database file",
            path.display()
        ))),
        Ok(meta) if meta.len() > 0 && !begins_as_sqlite(path) => Err(usage(format!(
            "{} is not an SQLite database (it does not begin with SQLite's header); --db names the oppsync database, or a new file to create",
            path.display()
        ))),
        Ok(_) if writes => match OpenOptions::new().write(true).open(path) {
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Err(usage(format!(
                "database {} is not writable by this user ({err}); {WRITE_ACCESS}",
                path.display()
            ))),
            _ => Ok(()),
        },
        Ok(_) => Ok(()),
        Err(_) if writes => match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(folder) if !folder.is_dir() => Err(usage(format!(
                "database path {}: folder {} does not exist; create it or name another with --db",
                path.display(),
                folder.display()
            ))),
            _ => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// Whether the file at `path` begins with SQLite's header, or cannot be read here (the open that
/// follows then says why): a notes file or a CSV given as --db is refused before SQLite is
/// asked to open it, and a writing command leaves no lock file beside it.
fn begins_as_sqlite(path: &Path) -> bool {
    let mut header = [0u8; 16];
    match File::open(path).and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header)) {
        Ok(()) => &header == b"SQLite format 3\0",
        Err(err) => err.kind() != std::io::ErrorKind::UnexpectedEof,
    }
}

/// What a user who may not write the database, or beside it, is told.
const WRITE_ACCESS: &str = "commands that write need write access to the database, its folder \
     and its lock file; the read-only ones (status, plan, explain, check, verify, push --dry-run) \
     need read access only";

/// Opens an existing database for reading only: no migration, no pragma that writes, so an
/// auditor with read access can run `status`, `plan` and `explain`. The schema must be the one
/// this build knows; an older one is migrated by the next writing command.
///
/// When SQLite can read it only without its locks (`immutable`, below), the result carries an
/// `UnlockedRead` to check once the command has read what it shows.
pub fn open_read_only(path: &Path) -> Result<ReadOnly> {
    if !path.is_file() {
        return Err(usage(format!(
            "no database at {}: run `oppsync pull` first, or name one with --db",
            path.display()
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open = |conn: Connection| -> Result<(Connection, usize)> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)?;
        let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        Ok((conn, version))
    };
    let opened = Connection::open_with_flags(path, flags)
        .map_err(anyhow::Error::from)
        .and_then(open);
    let mut unlocked = None;
    let failure = opened.as_ref().err().and_then(sqlite_failure);
    let code = failure.map(|failure| failure.code);
    let (conn, version) = match opened {
        Ok(opened) => opened,
        // A writer holds the database exclusively: read around it (`immutable`) and the pages
        // it is writing in place would be read half-written.
        // SQLite's own words ("database is locked") would only repeat the first ones.
        Err(_) if code == Some(ErrorCode::DatabaseBusy) => {
            bail!(
                "database {} is locked: a pull evaluating every export row for the first time \
                 holds it until it has stored them (one to two minutes per million opportunities); \
                 try again then",
                path.display()
            );
        }
        // A write stopped while the database was held in rollback-journal mode left a hot
        // journal: reading around it (`immutable`) would read the pages it wrote in place.
        // Only a connection that may write can roll it back, and a read-only command writes
        // nothing.
        Err(err) if has_hot_journal(path) => {
            return Err(err.context(format!(
                "database {} has a write to roll back (its -journal file, left by an oppsync \
                 stopped while it held the database): run a writing command such as \
                 `oppsync pull` once, then read it",
                path.display()
            )));
        }
        // Committed pages in a -wal this user cannot read through a -shm (one it may not
        // create, or not open): reading around them (`immutable`) would read the database as
        // it was before them, or pages a checkpoint is copying in.
        Err(err)
            if matches!(code, Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly))
                && has_wal_content(path) =>
        {
            return Err(err.context(format!(
                "database {} has changes in its -wal file that this user cannot read, having \
                 no access to the -shm file beside it: wait for the oppsync writing it to \
                 finish, or run a writing command such as `oppsync pull` once, then read it",
                path.display()
            )));
        }
        // A WAL database whose -wal and -shm files are gone (no writer has it open) cannot
        // be read by a user who may not create them beside it: SQLite says
        // SQLITE_READONLY_DIRECTORY, or SQLITE_CANTOPEN when an empty -wal is left without
        // its -shm. With no writer, the file is not changing, which is what SQLite's
        // `immutable` asks for; one that starts meanwhile is not seen by SQLite, so the caller
        // checks the `UnlockedRead` afterwards. Any other error is the reader's to see.
        Err(_)
            if code == Some(ErrorCode::CannotOpen)
                || failure.is_some_and(|failure| {
                    failure.extended_code == rusqlite::ffi::SQLITE_READONLY_DIRECTORY
                }) =>
        {
            unlocked = Some(UnlockedRead::begin(path));
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(anyhow::Error::from)
                .and_then(open)
                .with_context(|| format!("opening database {} read-only", path.display()))?
        }
        Err(err) => {
            return Err(err.context(format!("opening database {} read-only", path.display())));
        }
    };
    if version > MIGRATIONS.len() {
        let database = format!("the database {}", path.display());
        return Err(written_by_a_newer_oppsync(&database, version));
    }
    if version < MIGRATIONS.len() {
        bail!(
            "the database {} is at schema version {version}, older than this oppsync's {}; run a writing command (such as `oppsync pull`) once to migrate it",
            path.display(),
            MIGRATIONS.len()
        );
    }
    Ok(ReadOnly { conn, unlocked })
}

/// A database opened by `open_read_only`.
#[derive(Debug)]
pub struct ReadOnly {
    pub conn: Connection,
    /// Set when SQLite reads the file without its locks: check it once what is shown was read.
    pub unlocked: Option<UnlockedRead>,
}

/// A read of the database file without SQLite's locks (`immutable`), which `open_read_only`
/// takes only when no writer had the database open, and the file as it was when the read began.
/// SQLite cannot see a writer that starts meanwhile: one that writes pages into the file while
/// they are read (a checkpoint, or a write in rollback-journal mode) leaves what was read a mix of
/// before and after. A writer that only appends to its -wal changes nothing that is read here.
#[derive(Debug)]
pub struct UnlockedRead {
    path: PathBuf,
    began: Option<FileState>,
}

/// The size and modification time of a file, or `None` when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    len: u64,
    modified: std::time::SystemTime,
}

impl FileState {
    fn of(path: &Path) -> Option<FileState> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileState {
            len: meta.len(),
            modified: meta.modified().ok()?,
        })
    }
}

impl UnlockedRead {
    /// Notes the database file at `path` as it is now, before the read begins.
    fn begin(path: &Path) -> UnlockedRead {
        UnlockedRead {
            path: path.to_path_buf(),
            began: FileState::of(path),
        }
    }

    /// `result`, the outcome of a command that read through this, unless the database file was
    /// written meanwhile: then an error saying so, with the command's own error if it failed
    /// (a read of half-written pages often fails, as "database disk image is malformed").
    pub(crate) fn vouch<T>(&self, result: Result<T>) -> Result<T> {
        match (self.check(), result) {
            (Ok(()), result) => result,
            (Err(written), Ok(_)) => Err(written),
            (Err(written), Err(err)) => {
                Err(anyhow::anyhow!("{written:#} (it stopped with: {err:#})"))
            }
        }
    }

    /// An error when the database file was written since `begin`, or a write in
    /// rollback-journal mode is under way: what was read may then be half old, half new.
    fn check(&self) -> Result<()> {
        let now = FileState::of(&self.path);
        if now.is_some() && now == self.began && !has_hot_journal(&self.path) {
            return Ok(());
        }
        bail!(
            "database {} was written while this command read it without locks (as it must \
             when it may not create the database's -wal and -shm files): what it read may mix \
             the database before and after that write; run the command again",
            self.path.display()
        )
    }
}

/// `err` with what to do about it, when SQLite failed for want of room or found the database
/// file damaged; any other error as it is.
///
/// - No room (SQLITE_FULL) exits 1 as before: SQLite rolled back the statement or transaction
///   that failed, what was committed before it stays, and a rerun once space is freed goes on
///   from there (a `sync --every` retries with its backoff).
/// - A damaged file (SQLITE_CORRUPT, SQLITE_NOTADB) exits 2, as bad setup does: no rerun mends
///   it, so a `sync --every` stops at once and systemd does not restart it
///   (`RestartPreventExitStatus=2`). A database started afresh converges, as every push is an
///   upsert by Marketo's own keys.
pub(crate) fn with_storage_advice(err: anyhow::Error, path: &Path) -> anyhow::Error {
    let Some(failure) = sqlite_failure(&err) else {
        return err;
    };
    match failure.code {
        ErrorCode::DiskFull => anyhow::anyhow!(
            "no room left on the file system holding database {} or SQLite's temporary files \
             (SQLITE_TMPDIR, else TMPDIR, else /var/tmp): {}; the step that failed was rolled \
             back and what was stored before it stays: free space and run again",
            path.display(),
            crate::exit::error_line(&err)
        ),
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => usage(format!(
            "database {} is damaged ({}); oppsync cannot repair it: stop every oppsync that \
             uses it, then restore a copy of it, or move it aside with its -wal and -shm files \
             and run `oppsync sync`, which pulls every record and sends each one again \
             (records deleted in Dynamics meanwhile stay in Marketo)",
            path.display(),
            crate::exit::error_line(&err)
        )),
        _ => err,
    }
}

/// The SQLite error that caused `err`, if SQLite's: its code (SQLITE_BUSY when another
/// connection holds a lock this one waited for in vain) and extended code
/// (SQLITE_READONLY_DIRECTORY when this connection may not create the -wal and -shm files of
/// a WAL database).
fn sqlite_failure(err: &anyhow::Error) -> Option<rusqlite::ffi::Error> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(failure, _)) => Some(*failure),
            _ => None,
        })
}

/// Whether the database at `path` has a rollback journal beside it that is not empty: a write
/// in rollback-journal mode in progress, or one stopped that the next writer rolls back.
fn has_hot_journal(path: &Path) -> bool {
    is_not_empty(path, "-journal")
}

/// Whether the database at `path` has a -wal file beside it that is not empty: a writer has
/// it open, or one stopped before folding its pages into the database.
fn has_wal_content(path: &Path) -> bool {
    is_not_empty(path, "-wal")
}

/// Whether the file named `path` followed by `suffix` exists and is not empty.
fn is_not_empty(path: &Path, suffix: &str) -> bool {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::fs::metadata(name).is_ok_and(|m| m.len() > 0)
}

/// `file:PATH?immutable=1`, with the characters a URI path cannot hold escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// An empty database in memory, at the current schema, for a read-only command that runs
/// before any database exists (`check`).
pub(crate) fn open_scratch() -> Result<Connection> {
    let mut conn = Connection::open_in_memory()?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Creates `path` as an empty file readable and writable by its owner only, if it does not
/// exist (SQLite takes an empty file as an empty database).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// Warns when the database file can be read by users other than its owner: once per process
/// and mode, so that a `sync --every` says it at its first cycle and again only if the mode
/// changes, rather than every few minutes for a database shared with auditors on purpose.
fn warn_if_shared(path: &Path) {
    static WARNED: std::sync::Mutex<Option<(PathBuf, u32)>> = std::sync::Mutex::new(None);
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(mode) = readable_by_others(path) else {
        // Made private: a later share is said again.
        *warned = None;
        return;
    };
    let this = (path.to_path_buf(), mode);
    if warned.as_ref() == Some(&this) {
        return;
    }
    *warned = Some(this);
    crate::progress::warn(&format!(
        "warning: database {} is readable by other users (mode {mode:o}); it holds contact names and emails: chmod 600 {0}",
        path.display()
    ));
}

/// The permission bits of the file at `path` when users other than its owner may read it
/// (group or others); `None` when they may not, or it cannot be told.
pub(crate) fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// How long a connection waits for another one's lock before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pragmas set on every connection, outside migrations.
pub(crate) fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Only a database not yet written takes it, so before journal_mode writes the header.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL lets `status` and `sqlite3` read while a pull writes.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", CACHE_SIZE)?;
    Ok(())
}

/// Puts the database of `conn` in SQLite's rollback-journal mode, held exclusively by `conn`
/// until `release_to_wal`, for a first full evaluation of the export rows: its new pages are then
/// written once, into the database, where in WAL mode they are written to the WAL and copied
/// from there into the database. At 1M opportunities that is 2.3 GB written and copied once
/// fewer, and on these VMs, where the kernel charges dearly for page-cache memory it has not
/// used lately, the evaluation took 0.83-0.87 of the time (`tests/bench/README.md`, goal 4).
///
/// The price is that readers (`status`, `plan`, `sqlite3`) find the database locked until the
/// evaluation ends, where in WAL mode they read the staged records meanwhile; and a stop midway
/// keeps nothing of the evaluation, as it is one transaction. Hence only for a first evaluation,
/// when there are no export rows to read or to keep yet (the caller decides), and only when no
/// other connection has the database open: then this returns false at once, changing nothing, and
/// the evaluation runs in WAL mode as any other. False too for a database in memory or not in
/// WAL mode.
///
/// `synchronous` is FULL meanwhile: NORMAL is safe against a power cut in WAL mode only.
pub(crate) fn hold_in_rollback_mode(conn: &Connection) -> Result<bool> {
    if !journal_mode(conn)?.eq_ignore_ascii_case("wal") || conn.path().is_none_or(str::is_empty) {
        return Ok(false);
    }
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // Leaving WAL mode needs every other connection closed; one open now is not waited for.
    conn.busy_timeout(Duration::ZERO)?;
    let switched: rusqlite::Result<String> =
        conn.query_row("PRAGMA main.journal_mode = DELETE", [], |r| r.get(0));
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match switched {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => {
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(true)
        }
        _ => {
            conn.pragma_update(None, "locking_mode", "NORMAL")?;
            Ok(false)
        }
    }
}

/// Undoes `hold_in_rollback_mode`, once its transaction has ended: WAL mode again, the lock let
/// go. A reader that slipped in between keeps the database in rollback-journal mode for now
/// (said, not an error): the next writing command opens it in WAL mode again.
pub(crate) fn release_to_wal(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "locking_mode", "NORMAL")?;
    let back: rusqlite::Result<String> =
        conn.query_row("PRAGMA main.journal_mode = WAL", [], |r| r.get(0));
    match back {
        Ok(mode) if mode.eq_ignore_ascii_case("wal") => {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        Ok(mode) => crate::progress::say(&format!(
            "the database stays in journal mode {mode} until the next writing command"
        )),
        Err(err) => crate::progress::say(&format!(
            "the database stays in rollback-journal mode until the next writing command: {err}"
        )),
    }
    Ok(())
}

/// The journal mode of the main database of `conn`, as SQLite names it (`wal`, `delete`, or
/// `memory` for a database in memory).
pub(crate) fn journal_mode(conn: &Connection) -> Result<String> {
    Ok(conn.query_row("PRAGMA main.journal_mode", [], |r| r.get(0))?)
}

/// `database` at schema `version`, newer than this build's: a usage error (exit 2), since only
/// a newer oppsync can use it and no rerun helps (a `sync --every` stops rather than retrying,
/// as after a binary rolled back under a database the newer one migrated).
fn written_by_a_newer_oppsync(database: &str, version: usize) -> anyhow::Error {
    crate::exit::usage(format!(
        "{database} is at schema version {version}, newer than this oppsync knows ({}): it was migrated by \
         a newer oppsync, so use that one (or a copy of the database from before it ran)",
        MIGRATIONS.len()
    ))
}

/// Applies the migrations the database has not seen, each in its own transaction, with SQLite's
/// foreign key checks off, as SQLite's procedure for changing a table's definition has it: a
/// table other tables refer to is rebuilt by dropping it (`run`, migration 0020), which with the
/// checks on would first delete its rows one by one and fail on the first one referred to.
/// Instead, each migration must leave no more references dangling than there were before the
/// first (`PRAGMA foreign_key_check`; a database left with some by an earlier bug still
/// migrates), or it rolls back. The check reads every staged record: at 1M opportunities, an
/// `init` that migrated to 0020 took 3.6-4.0 s, against 1.5 s for one with nothing to migrate.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_with(conn, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, migrations: &[SqlFile]) -> Result<()> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > migrations.len() {
        return Err(written_by_a_newer_oppsync("the database", current));
    }
    if current == migrations.len() {
        return Ok(());
    }
    without_foreign_key_checks(conn, |conn| {
        let before = dangling_references(conn)?;
        for (index, file) in migrations.iter().enumerate().skip(current) {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Another process may have migrated between our read and this transaction.
            let now: usize = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
            if now > index {
                continue;
            }
            tx.execute_batch(file.text)
                .map_err(anyhow::Error::from)
                .and_then(|()| no_new_dangling_reference(&tx, &before))
                .with_context(|| format!("applying {}", file.path))?;
            tx.pragma_update(None, "user_version", index + 1)?;
            tx.commit()?;
        }
        Ok(())
    })
}

/// How many rows refer to a row that does not exist, by (table, table referred to).
type Dangling = BTreeMap<(String, String), usize>;

fn dangling_references(conn: &Connection) -> Result<Dangling> {
    let mut dangling = Dangling::new();
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        *dangling.entry((row.get(0)?, row.get(2)?)).or_default() += 1;
    }
    Ok(dangling)
}

/// An error naming a table with more rows than `before` that refer to a row that does not exist.
fn no_new_dangling_reference(conn: &Connection, before: &Dangling) -> Result<()> {
    for ((table, parent), count) in dangling_references(conn)? {
        let was = before
            .get(&(table.clone(), parent.clone()))
            .copied()
            .unwrap_or(0);
        if count > was {
            let more = count - was;
            let rows = if more == 1 { "row" } else { "rows" };
            bail!(
                "it would leave {more} more {rows} of {table} referring to a row of {parent} that \
                 does not exist"
            );
        }
    }
    Ok(())
}

/// Runs `f` with SQLite's foreign key checks off on `conn`, then puts them back as they were,
/// whatever `f` returned. Outside a transaction only: SQLite ignores the pragma inside one.
pub(crate) fn without_foreign_key_checks<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
    let checked: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = f(conn);
    let restored = conn.pragma_update(None, "foreign_keys", checked);
    let value = result?;
    restored?;
    Ok(value)
}

/// Held by a command that writes staged or pushed state, so that two oppsync processes never
/// interleave their writes to one database. The OS releases it when the process dies.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
    /// The database it guards, whose read bits the lock file follows (`readable_as_database`).
    db: PathBuf,
}

impl WriterLock {
    /// Takes the lock beside `db` or fails at once, naming the lock file.
    pub fn acquire(db: &Path) -> Result<WriterLock> {
        let path = lock_path(db);
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = match options.open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(usage(format!(
                    "cannot open lock file {} ({err}); {WRITE_ACCESS}",
                    path.display()
                )));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("opening lock file {}", path.display()));
            }
        };
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for `status`; the lock, not this text, is what excludes.
                let lock = WriterLock {
                    file,
                    path,
                    db: db.to_path_buf(),
                };
                lock.note_waiting(None);
                Ok(lock)
            }
            Err(TryLockError::WouldBlock) => match writer(db) {
                Some(Writer {
                    pid,
                    waiting: Some(waiting),
                }) => bail!(
                    "another oppsync process (pid {pid}) holds {} (lock {}): {waiting}; stop it (SIGTERM) to run this command now, or leave the work to it",
                    db.display(),
                    path.display()
                ),
                _ => bail!(
                    "another oppsync process is writing {} (lock {} is held); wait for it to finish",
                    db.display(),
                    path.display()
                ),
            },
            Err(TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets whoever may read the database read the lock file too (its read bits, no more), so
    /// that an auditor's `status` can tell a run in progress from one interrupted, as SQLite
    /// gives the `-wal` and `-shm` files the database's mode. The note holds a pid and when the
    /// next cycle starts, nothing the database does not show. Done with each note, so that a
    /// `sync --every` follows a `chmod` of the database at its next cycle. Best effort: a lock
    /// file another user owns keeps its mode, and `status` says when it cannot read it.
    fn readable_as_database(&self) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let Ok(meta) = std::fs::metadata(&self.db) else {
                return;
            };
            let mode = 0o600 | (meta.permissions().mode() & 0o044);
            let _ = self
                .file
                .set_permissions(std::fs::Permissions::from_mode(mode));
        }
    }

    /// Says in the lock file what the holder waits for between runs (`sync --every`: when the
    /// next cycle starts), for `status` and for a writer turned away; `None` clears it when a
    /// run starts. Best effort: the lock, not this text, is what excludes.
    pub(crate) fn note_waiting(&self, waiting: Option<&str>) {
        self.readable_as_database();
        let mut text = std::process::id().to_string();
        if let Some(waiting) = waiting {
            text.push('\n');
            text.push_str(&waiting.replace('\n', " "));
        }
        // Written over the old text, then cut to length, so that a reader meanwhile always
        // finds the pid (the first line, the same before and after).
        let mut file = &self.file;
        let _ = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0));
        let _ = std::io::Write::write_all(&mut file, text.as_bytes());
        let _ = file.set_len(text.len() as u64);
    }
}

/// The oppsync process holding the writer lock of a database, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Writer {
    pub pid: u32,
    /// What it waits for between runs (`sync --every`: when its next cycle starts); `None`
    /// while it runs one.
    pub waiting: Option<String>,
}

/// The writer lock's file beside the database `db`: its name with `.lock` added.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Why this user cannot tell whether an oppsync process holds the writer lock of `db`: its
/// lock file is there but may not be opened (the writer made it before the database was
/// readable by others, or another user's umask). `None` when it can be told.
pub(crate) fn writer_unknown(db: &Path) -> Option<String> {
    let path = lock_path(db);
    match File::open(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
            "cannot open lock file {} ({err}), so whether a run is in progress is not known: \
             give this user read access to it, as to the database",
            path.display()
        )),
        _ => None,
    }
}

/// The oppsync process writing the database at `db` now, if one is (it holds the writer lock);
/// `None` when none is, or when the lock file cannot be read (`writer_unknown`).
pub(crate) fn writer(db: &Path) -> Option<Writer> {
    let mut file = File::open(lock_path(db)).ok()?;
    match file.try_lock_shared() {
        // Nobody holds it (the shared lock is released when the file closes).
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).ok()?;
            let mut lines = text.lines();
            let pid = lines.next()?.trim().parse().ok()?;
            let waiting = lines
                .next()
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_string);
            Some(Writer { pid, waiting })
        }
        Err(TryLockError::Error(_)) => None,
    }
}

/// The two text columns of every row `sql` gives with `params`: schema objects' names with
/// their SQL or kind, as the code that sets indexes aside and drops temp tables reads them.
pub(crate) fn text_pairs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The first column of every row `sql` gives with `params`, as text, for tests.
#[cfg(test)]
pub(crate) fn texts(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map(params, |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// SQLite's query plan for `sql`, one step a line, for tests that a query is served by an index.
#[cfg(test)]
pub(crate) fn query_plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params, |r| r.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    plan.join("\n")
}

/// What `f` returns, and how many thousands of SQLite's virtual machine steps it took on
/// `conn` (counted one by one by the progress handler: SQLite counts each statement's steps
/// on their own, so a coarser count would leave out every short statement), for tests that a
/// query reads a bounded part of the database however large it is. The handler is shared: the
/// stop handler every writing connection has (`stop::watch`) is put back afterwards.
#[cfg(test)]
pub(crate) fn steps_taken<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> T,
) -> (T, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let steps = std::sync::Arc::new(AtomicU64::new(0));
    let counted = steps.clone();
    conn.progress_handler(
        1,
        Some(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            false
        }),
    )
    .unwrap();
    let value = f(conn);
    crate::stop::watch(conn).unwrap();
    (value, steps.load(Ordering::Relaxed) / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's own SQLITE_FULL, from a database capped at a few pages as a full disk caps it.
    fn disk_full() -> anyhow::Error {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT); PRAGMA max_page_count = 3;")
            .unwrap();
        let filled = (0..100).try_for_each(|_| {
            conn.execute("INSERT INTO t (v) VALUES (randomblob(2000))", [])
                .map(drop)
        });
        anyhow::Error::new(filled.unwrap_err()).context("committing pages/accounts-1.json")
    }

    #[test]
    fn a_full_disk_says_where_to_free_space_and_exits_1() {
        let err = with_storage_advice(disk_full(), Path::new("/srv/oppsync.db"));
        let line = crate::exit::error_line(&err);
        assert!(
            line.starts_with(
                "no room left on the file system holding database /srv/oppsync.db or SQLite's \
                 temporary files"
            ),
            "{line}"
        );
        // The step that failed is still named.
        assert!(line.contains("committing pages/accounts-1.json: database or disk is full"));
        assert!(line.ends_with("free space and run again"), "{line}");
        assert_eq!(crate::exit::code_for(&err), 1);
    }

    #[test]
    fn a_damaged_file_says_how_to_start_again_and_exits_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oppsync.db");
        std::fs::write(&path, b"SQLite format 3\0 and nothing a database holds").unwrap();
        let opened = Connection::open(&path).and_then(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        });
        let err = anyhow::Error::new(opened.unwrap_err()).context("opening database");
        let err = with_storage_advice(err, &path);
        let line = crate::exit::error_line(&err);
        assert!(
            line.contains("is damaged (opening database: file is not a database"),
            "{line}"
        );
        assert!(
            line.contains("move it aside with its -wal and -shm files"),
            "{line}"
        );
        assert_eq!(crate::exit::code_for(&err), 2);
        // Any other failure of SQLite's is left as it is.
        let conn = Connection::open_in_memory().unwrap();
        let other = anyhow::Error::new(conn.execute("SELECT * FROM missing", []).unwrap_err());
        let said = crate::exit::error_line(&other);
        let other = with_storage_advice(other, &path);
        assert_eq!(crate::exit::error_line(&other), said);
        assert_eq!(crate::exit::code_for(&other), 1);
    }

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

    fn foreign_keys_checked(conn: &Connection) -> bool {
        conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap()
    }

    /// Migration 0020 rebuilds `run`, which seventeen tables refer to.
    #[test]
    fn the_run_table_rebuilt_keeps_every_run_and_every_reference_to_it_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oppsync.db");
        let mut conn = Connection::open(&path).unwrap();
        configure(&conn).unwrap();
        let before_0020 = MIGRATIONS
            .iter()
            .position(|m| m.path.ends_with("0020_interrupted_runs.sql"))
            .unwrap();
        migrate_with(&mut conn, &MIGRATIONS[..before_0020]).unwrap();
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at, finished_at, outcome, exit_code, counts, message)
             VALUES (1, 'pull', '[\"--full\"]', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z', 'done', 0, '{\"pages\": 1}', NULL),
                    (2, 'push', '[]', '2026-01-02T00:00:00Z', NULL, 'running', NULL, NULL, NULL);
             INSERT INTO opportunity (opportunityid, raw, source_file, staged_run, seen_run)
             VALUES ('o-1', '{}', 'opportunities.json', 1, 1);
             INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
             VALUES ('lead', 'a@example.com', '{}', '7', 2, '2026-01-02T00:00:00Z');",
        )
        .unwrap();
        let runs = |conn: &Connection| {
            texts(
                conn,
                "SELECT json_array(run_id, command, args, started_at, finished_at, outcome, exit_code, counts, message) FROM run ORDER BY run_id",
                [],
            )
        };
        let kept = runs(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(runs(&conn), kept);
        assert!(
            foreign_keys_checked(&conn),
            "foreign key checks are back on after the migrations"
        );
        // The references bind to the rebuilt table, and are checked.
        for sql in [
            "DELETE FROM run WHERE run_id = 2",
            "UPDATE opportunity SET staged_run = 3",
        ] {
            let err = conn.execute(sql, []).unwrap_err();
            assert!(
                err.to_string().contains("FOREIGN KEY constraint failed"),
                "{sql}: {err}"
            );
        }
        conn.execute(
            "UPDATE run SET outcome = 'interrupted' WHERE run_id = 2",
            [],
        )
        .unwrap();
        let err = conn
            .execute("UPDATE run SET outcome = 'lost' WHERE run_id = 2", [])
            .unwrap_err();
        assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    }

    #[test]
    fn a_migration_that_would_leave_a_reference_dangling_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("oppsync.db")).unwrap();
        configure(&conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'push', '[]', 'now');
             INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
             VALUES ('lead', 'a@example.com', '{}', '7', 1, 'now');
             -- As an earlier bug could have left it: it does not stop the migrations after.
             PRAGMA foreign_keys = OFF;
             INSERT INTO api_call (run_id, method, path, attempt, duration_ms, at)
             VALUES (5, 'POST', '/rest/v1/leads.json', 1, 5, 'now');
             PRAGMA foreign_keys = ON;",
        )
        .unwrap();
        let table = |conn: &Connection, name: &str| {
            texts(
                conn,
                "SELECT name FROM sqlite_schema WHERE name = ?1",
                [name],
            )
            .len()
        };
        let mut migrations = MIGRATIONS.to_vec();
        migrations.push(SqlFile {
            path: "sql/schema/9998_table_added.sql",
            text: "CREATE TABLE kept (x);",
        });
        migrate_with(&mut conn, &migrations).unwrap();
        assert_eq!(table(&conn, "kept"), 1);
        migrations.push(SqlFile {
            path: "sql/schema/9999_runs_forgotten.sql",
            text: "CREATE TABLE lost (x); DELETE FROM run;",
        });
        let err = migrate_with(&mut conn, &migrations).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "applying sql/schema/9999_runs_forgotten.sql: it would leave 1 more row of mkto_ack \
             referring to a row of run that does not exist"
        );
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() + 1);
        assert_eq!(texts(&conn, "SELECT command FROM run", []), ["push"]);
        assert_eq!(table(&conn, "lost"), 0, "rolled back");
        assert!(
            foreign_keys_checked(&conn),
            "foreign key checks are back on after a failed migration too"
        );
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(format!("{err:#}").contains("newer than this oppsync knows"));
        assert!(
            crate::exit::is_usage(&err),
            "only a newer oppsync helps: exit 2"
        );
    }

    #[test]
    fn a_new_database_has_8_kib_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |conn: &Connection| -> i64 {
            conn.pragma_query_value(None, "page_size", |r| r.get(0))
                .unwrap()
        };
        let new = dir.path().join("new.db");
        assert_eq!(page_size(&open(&new).unwrap()), PAGE_SIZE);
        assert_eq!(page_size(&open(&new).unwrap()), PAGE_SIZE);
        let old = dir.path().join("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x);")
            .unwrap();
        assert_eq!(page_size(&open(&old).unwrap()), 4096);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_its_wal_and_shm_and_the_lock_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let _lock = WriterLock::acquire(&db).unwrap();
        let conn = open(&db).unwrap();
        conn.execute(
            "INSERT INTO run (command, args, started_at) VALUES ('t', '[]', 'now')",
            [],
        )
        .unwrap();
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let path = format!("{}{suffix}", db.display());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{path}");
        }
    }

    #[test]
    fn a_database_held_in_rollback_mode_is_locked_to_readers_and_wal_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let mut conn = open(&db).unwrap();
        let runs = "SELECT count(*) FROM run";
        let count = |conn: &Connection| -> i64 { conn.query_row(runs, [], |r| r.get(0)).unwrap() };

        assert!(hold_in_rollback_mode(&conn).unwrap());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .unwrap();
        tx.execute(
            "INSERT INTO run (command, args, started_at) VALUES ('t', '[]', 'now')",
            [],
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let journal = format!("{}-journal", db.display());
            let mode = std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{journal}");
        }
        // Not read around the lock (`immutable`), which would read pages being written.
        let err = open_read_only(&db).unwrap_err();
        assert!(format!("{err:#}").contains("is locked"), "{err:#}");

        tx.commit().unwrap();
        release_to_wal(&conn).unwrap();
        assert_eq!(journal_mode(&conn).unwrap(), "wal");
        let reader = open_read_only(&db).unwrap().conn;
        assert_eq!(count(&reader), 1);
        // With another connection open, the database is not held, and stays in WAL mode.
        assert!(!hold_in_rollback_mode(&conn).unwrap());
        assert_eq!(journal_mode(&conn).unwrap(), "wal");
        conn.execute(
            "INSERT INTO run (command, args, started_at) VALUES ('t', '[]', 'now')",
            [],
        )
        .unwrap();
        assert_eq!(count(&reader), 2);
    }

    #[test]
    fn a_read_without_locks_is_refused_once_the_file_was_written_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        drop(open(&db).unwrap());
        let read = UnlockedRead::begin(&db);
        read.check().unwrap();

        // A writer's last close copies its WAL into the database file.
        let writer = open(&db).unwrap();
        writer
            .execute(
                "INSERT INTO run (command, args, started_at) VALUES ('t', ?1, 'now')",
                ["x".repeat(64 * 1024)],
            )
            .unwrap();
        read.check().unwrap();
        drop(writer);
        let err = read.check().unwrap_err();
        assert!(
            format!("{err:#}").contains("was written while this command read it"),
            "{err:#}"
        );

        // The command's outcome gives way to the write, and its error is kept.
        assert!(read.vouch(Ok(())).is_err());
        let err = read
            .vouch::<()>(Err(anyhow::anyhow!("database disk image is malformed")))
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("was written while"), "{message}");
        assert!(message.contains("(it stopped with: database disk image is malformed)"));
        let unchanged = UnlockedRead::begin(&db);
        assert_eq!(unchanged.vouch(Ok(7)).unwrap(), 7);
        let err = unchanged
            .vouch::<()>(Err(anyhow::anyhow!("no such opportunity")))
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "no such opportunity");

        // A write in rollback-journal mode under way, its pages not yet in the file.
        let read = UnlockedRead::begin(&db);
        let journal = format!("{}-journal", db.display());
        std::fs::write(&journal, b"pages to roll back").unwrap();
        assert!(read.check().is_err());
        std::fs::write(&journal, b"").unwrap();
        read.check().unwrap();
    }

    #[test]
    fn a_read_only_connection_refuses_writes_and_an_outdated_schema() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let err = open_read_only(&db).unwrap_err();
        assert!(crate::exit::is_usage(&err), "{err:#}");
        drop(open(&db).unwrap());
        let conn = open_read_only(&db).unwrap().conn;
        let err = conn
            .execute(
                "INSERT INTO run (command, args, started_at) VALUES ('t', '[]', 'now')",
                [],
            )
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        drop(conn);
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let err = open_read_only(&db).unwrap_err();
        assert!(
            format!("{err:#}").contains("older than this oppsync"),
            "{err:#}"
        );
    }

    #[test]
    fn the_writer_is_known_by_its_pid_and_what_it_waits_for_while_it_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        assert_eq!(writer(&db), None, "no lock file yet");
        let lock = WriterLock::acquire(&db).unwrap();
        let pid = std::process::id();
        assert_eq!(writer(&db), Some(Writer { pid, waiting: None }));
        lock.note_waiting(Some("next cycle at noon\nsecond line"));
        let waiting = Some("next cycle at noon second line".to_string());
        assert_eq!(writer(&db), Some(Writer { pid, waiting }));
        lock.note_waiting(None);
        assert_eq!(writer(&db), Some(Writer { pid, waiting: None }));
        lock.note_waiting(Some("next cycle at one"));
        drop(lock);
        assert_eq!(writer(&db), None, "a note left behind names no writer");
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
