-- Staging: what oppsync has read from Dynamics, one table per entity set, plus the audit
-- tables every run writes (runs, pages, rejected records).
--
-- Every staged table has the same bookkeeping columns:
--   raw             the record exactly as last received (annotations included), JSON text
--   source_file     the fixture file or URL of the page it last came from
--   staged_run      the run that last wrote the record
--   seen_run        the run that last saw the record in a page (used by `pull --full`)
--   deleted_run     NULL while the record exists in Dynamics; the run that saw it deleted
--   deleted_reason  why it is a tombstone: 'deleted' (a $deletedEntity item) or 'missing from full pull'
-- Typed columns hold the fields the rules and the default Marketo mappings read. Lookups
-- keep their lookuplogicalname annotation in a `*_type` column and, where a label is
-- useful, their FormattedValue in a `*_label` column.

CREATE TABLE run (
    run_id      INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,
    args        TEXT NOT NULL,          -- JSON array of the command's arguments (never secrets)
    started_at  TEXT NOT NULL,          -- ISO 8601 UTC
    finished_at TEXT,
    outcome     TEXT NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'done', 'done_with_rejects', 'failed', 'usage_error')),
    exit_code   INTEGER,
    counts      TEXT,                   -- JSON object, command-specific counters
    message     TEXT                    -- the error, for failed runs
) STRICT;

CREATE TABLE staged_page (
    page_id       INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES run (run_id),
    source        TEXT NOT NULL,        -- file path or URL
    entity_set    TEXT,                 -- NULL when it could not be determined
    status        TEXT NOT NULL CHECK (status IN ('staged', 'unknown_entity_set')),
    upserted      INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    rejected      INTEGER NOT NULL DEFAULT 0,
    staged_at     TEXT NOT NULL
) STRICT;

CREATE TABLE rejected_record (
    rejected_id  INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES run (run_id),
    source       TEXT NOT NULL,
    position     INTEGER NOT NULL,      -- 0-based index in the page's `value` array
    entity_set   TEXT,
    reason       TEXT NOT NULL,
    raw          TEXT NOT NULL
) STRICT;

CREATE TABLE opportunity (
    opportunityid       TEXT PRIMARY KEY,
    name                TEXT,
    description         TEXT,
    estimatedvalue      REAL,
    actualvalue         REAL,
    estimatedclosedate  TEXT,           -- YYYY-MM-DD
    actualclosedate     TEXT,           -- YYYY-MM-DD
    closeprobability    INTEGER,
    statecode           INTEGER,        -- 0 open, 1 won, 2 lost
    statuscode          INTEGER,
    stepname            TEXT,
    createdon           TEXT,
    modifiedon          TEXT,
    customerid          TEXT,
    customerid_type     TEXT,           -- lookuplogicalname annotation: 'account' or 'contact'
    parentaccountid     TEXT,
    parentcontactid     TEXT,
    new_synctomkto      INTEGER,        -- NULL, 0 or 1
    raw                 TEXT NOT NULL,
    source_file         TEXT NOT NULL,
    staged_run          INTEGER NOT NULL REFERENCES run (run_id),
    seen_run            INTEGER NOT NULL,
    deleted_run         INTEGER,
    deleted_reason      TEXT
) STRICT;

CREATE TABLE account (
    accountid                TEXT PRIMARY KEY,
    name                     TEXT,
    websiteurl               TEXT,
    numberofemployees        INTEGER,
    revenue                  REAL,
    industrycode             INTEGER,
    industrycode_label       TEXT,      -- FormattedValue of industrycode
    telephone1               TEXT,
    address1_line1           TEXT,
    address1_line2           TEXT,
    address1_line3           TEXT,
    address1_city            TEXT,
    address1_stateorprovince TEXT,
    address1_postalcode      TEXT,
    address1_country         TEXT,
    statecode                INTEGER,
    modifiedon               TEXT,
    new_synctomkto           INTEGER,
    raw                      TEXT NOT NULL,
    source_file              TEXT NOT NULL,
    staged_run               INTEGER NOT NULL REFERENCES run (run_id),
    seen_run                 INTEGER NOT NULL,
    deleted_run              INTEGER,
    deleted_reason           TEXT
) STRICT;

CREATE TABLE contact (
    contactid             TEXT PRIMARY KEY,
    firstname             TEXT,
    lastname              TEXT,
    fullname              TEXT,
    emailaddress1         TEXT,
    jobtitle              TEXT,
    telephone1            TEXT,
    parentcustomerid      TEXT,
    parentcustomerid_type TEXT,         -- lookuplogicalname annotation
    statecode             INTEGER,
    modifiedon            TEXT,
    new_synctomkto        INTEGER,
    raw                   TEXT NOT NULL,
    source_file           TEXT NOT NULL,
    staged_run            INTEGER NOT NULL REFERENCES run (run_id),
    seen_run              INTEGER NOT NULL,
    deleted_run           INTEGER,
    deleted_reason        TEXT
) STRICT;

CREATE TABLE connection (
    connectionid          TEXT PRIMARY KEY,
    record1id             TEXT,
    record1id_type        TEXT,         -- lookuplogicalname annotation
    record1objecttypecode INTEGER,      -- 1 account, 2 contact, 3 opportunity, 8 user, 9 team
    record1roleid         TEXT,
    record1roleid_label   TEXT,         -- FormattedValue: the role's name
    record2id             TEXT,
    record2id_type        TEXT,
    record2objecttypecode INTEGER,
    record2roleid         TEXT,
    record2roleid_label   TEXT,
    relatedconnectionid   TEXT,
    ismaster              INTEGER,
    statecode             INTEGER,      -- 0 active, 1 inactive
    modifiedon            TEXT,
    raw                   TEXT NOT NULL,
    source_file           TEXT NOT NULL,
    staged_run            INTEGER NOT NULL REFERENCES run (run_id),
    seen_run              INTEGER NOT NULL,
    deleted_run           INTEGER,
    deleted_reason        TEXT
) STRICT;

CREATE INDEX connection_record1 ON connection (record1id);
CREATE INDEX connection_record2 ON connection (record2id);

CREATE TABLE connectionrole (
    connectionroleid TEXT PRIMARY KEY,
    name             TEXT,
    category         INTEGER,           -- 1000 Stakeholder, 1001 Sales Team, ...
    statecode        INTEGER,
    raw              TEXT NOT NULL,
    source_file      TEXT NOT NULL,
    staged_run       INTEGER NOT NULL REFERENCES run (run_id),
    seen_run         INTEGER NOT NULL,
    deleted_run      INTEGER,
    deleted_reason   TEXT
) STRICT;

CREATE INDEX opportunity_by_customer ON opportunity (customerid);
CREATE INDEX contact_by_parent ON contact (parentcustomerid);

-- The [rules] settings the views read; rewritten from the configuration on every run.
CREATE TABLE rule_setting (
    name  TEXT PRIMARY KEY,
    value ANY NOT NULL
) STRICT;
