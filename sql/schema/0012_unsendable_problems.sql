-- The problems of records the plan cannot send (an export row with a skip reason, or without a
-- key or payload: a contact without an email, a role of an opportunity not sent) are kept in
-- step with the export rows, re-checked only where those rows changed, instead of being seen
-- again by every push: an org where a fifth of the contacts have no email holds hundreds of
-- thousands of them, and a push that re-read, re-recorded and re-listed each one every cycle
-- cost what exists, not what changed (ARCHITECTURE.md, "Standing problems").
--   problem.root       for such a problem, the root of the export row it stands for (the
--                      unit the refresh re-evaluates); NULL for a problem a push saw while
--                      sending (a record Marketo refused, a role whose lead is not in Marketo,
--                      a record over the request limit), seen again or closed by every push
--   export_skip_root   the roots whose skipped rows a refresh changed (a skipped row replaced,
--                      or a new one), which the next push re-checks and then forgets
--   export_state.skips_checked  0 after a full evaluation (and on a database from before this
--                      migration): the next push re-checks every root
ALTER TABLE problem ADD COLUMN root TEXT;
CREATE INDEX problem_unsendable_by_root ON problem (subject, root)
    WHERE stage = 'push' AND resolved_run IS NULL AND root IS NOT NULL;
-- The others, which a complete push closes when it did not see them (`close_unseen`), found
-- without walking the standing unsendable ones.
CREATE INDEX problem_seen_open ON problem (stage, last_run)
    WHERE resolved_run IS NULL AND root IS NULL;

CREATE TABLE export_skip_root (
    object  TEXT NOT NULL,
    root    TEXT NOT NULL,
    PRIMARY KEY (object, root)
) STRICT, WITHOUT ROWID;

ALTER TABLE export_state ADD COLUMN skips_checked INTEGER NOT NULL DEFAULT 0;
