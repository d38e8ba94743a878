-- A run whose process stopped before it recorded an outcome (killed, out of memory, its machine
-- stopped, or the recording itself failed on a full disk) used to stay `running` in this table
-- for good, which only `status` read as interrupted. The next writing command now closes it as
-- `interrupted` (`run::start`: it holds the writer lock, so no other run is under way), so that
-- `sqlite3` reads what happened too. finished_at stays NULL: when the process stopped is not
-- known. SQLite widens a CHECK only by rebuilding the table; seventeen tables refer to `run`,
-- so migrations run with foreign key checks off and are checked after (`db::migrate`).
CREATE TABLE run_new (
    run_id      INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    args        TEXT NOT NULL,          -- JSON array of the command's arguments (never secrets)
    started_at  TEXT NOT NULL,          -- ISO 8601 UTC
    finished_at TEXT,
    outcome     TEXT NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'interrupted', 'done', 'done_with_rejects', 'failed', 'usage_error')),
    exit_code   INTEGER,
    counts      TEXT,                   -- JSON object, command-specific counters
    message     TEXT                    -- the error, for failed runs
) STRICT;
INSERT INTO run_new (run_id, command, args, started_at, finished_at, outcome, exit_code, counts, message)
SELECT run_id, command, args, started_at, finished_at, outcome, exit_code, counts, message FROM run;
DROP TABLE run;
ALTER TABLE run_new RENAME TO run;
