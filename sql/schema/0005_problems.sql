-- Standing problems (what makes a run exit 3) and since when they stand: a record pull
-- rejected, or a record push could not send, with the reason. A run exits 3 only for a problem
-- it saw first, or for one whose reason changed; a problem that keeps coming back is standing:
-- `status` lists it with when it was first seen, and it does not make every run exit 3.
--   stage    'pull' or 'push'
--   subject  pull: the entity set ('' when unknown); push: the Marketo object
--   key      pull: the record's id (or a digest of its text); push: its Marketo key or source id
--   resolved_run  the run that no longer saw it: the record was staged, or sent, or is gone
CREATE TABLE problem (
    problem_id    INTEGER PRIMARY KEY,
    stage         TEXT NOT NULL CHECK (stage IN ('pull', 'push')),
    subject       TEXT NOT NULL,
    key           TEXT NOT NULL,
    reason        TEXT NOT NULL,
    first_run     INTEGER NOT NULL REFERENCES run (run_id),
    first_seen    TEXT NOT NULL,
    last_run      INTEGER NOT NULL REFERENCES run (run_id),
    last_seen     TEXT NOT NULL,
    resolved_run  INTEGER
) STRICT;

CREATE UNIQUE INDEX problem_open ON problem (stage, subject, key) WHERE resolved_run IS NULL;

-- `[history] keep_days` prunes the API calls and outcomes of old runs, and the old runs
-- nothing refers to, at the end of every writing run: by run, so these are indexed.
CREATE INDEX api_call_by_run ON api_call (run_id);
CREATE INDEX push_outcome_by_run ON push_outcome (run_id);
CREATE INDEX mkto_ack_by_run ON mkto_ack (run_id);
CREATE INDEX problem_by_first_run ON problem (first_run);
CREATE INDEX problem_by_last_run ON problem (last_run);
