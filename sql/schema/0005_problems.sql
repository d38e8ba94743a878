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
