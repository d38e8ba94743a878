-- What `sync` found when it last asked Marketo about a random sample of what it acknowledged
-- (every `[marketo] sample_every_hours`; `export::recheck::sample`, a query per object): a row
-- per sample, with how many leads and opportunities were asked about and how many Marketo
-- lacks (deleted or merged there since; `oppsync recheck` finds them all), or why the sample
-- could not be looked up. `status` shows the last one.
CREATE TABLE marketo_sample (
    sample_id              INTEGER PRIMARY KEY,
    run_id                 INTEGER NOT NULL REFERENCES run (run_id),
    sampled_at             TEXT NOT NULL,
    leads_asked            INTEGER NOT NULL DEFAULT 0,
    leads_missing          INTEGER NOT NULL DEFAULT 0,
    opportunities_asked    INTEGER NOT NULL DEFAULT 0,
    opportunities_missing  INTEGER NOT NULL DEFAULT 0,
    error                  TEXT
) STRICT;
