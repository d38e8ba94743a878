-- The pages a run staged and the records it rejected are history, pruned with the run's API
-- calls and outcomes once older than `[history] keep_days` (the run itself stays while staged
-- records point at it). A `sync --every 5m` stages six pages or more per cycle, 1,700 rows a
-- day; pruning them at the end of every writing run looks them up by run.
CREATE INDEX staged_page_by_run ON staged_page (run_id);
CREATE INDEX rejected_record_by_run ON rejected_record (run_id);
