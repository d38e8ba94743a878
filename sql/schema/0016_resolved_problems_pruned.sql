-- Problems resolved before `[history] keep_days` are history, pruned at the end of every
-- writing run with the runs they alone kept (`run::prune`); standing problems stay however old.
-- Nothing reads a resolved problem but an auditor, and without pruning an org whose records
-- come and go would keep every problem it ever had, and each problem's first and last runs.
-- The prune finds them by this index rather than reading every standing problem (at 1M
-- opportunities with a fifth of the contacts without an email, 200,000 of them).
CREATE INDEX problem_resolved ON problem (last_seen) WHERE resolved_run IS NOT NULL;
