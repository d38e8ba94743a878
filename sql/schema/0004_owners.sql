-- Owners and one currency (Adobe's recipe for non-native Dynamics integrations): the system
-- users who own records become Marketo sales persons, and every record carries its owner;
-- amounts come from the org's base-currency columns.
--   ownerid       the record's owner (_ownerid_value), a systemuser or a team
--   ownerid_type  its lookuplogicalname annotation: 'systemuser' or 'team'
--   *_base        the money column converted to the org's base currency by Dynamics

ALTER TABLE opportunity ADD COLUMN ownerid TEXT;
ALTER TABLE opportunity ADD COLUMN ownerid_type TEXT;
ALTER TABLE opportunity ADD COLUMN estimatedvalue_base REAL;
ALTER TABLE opportunity ADD COLUMN actualvalue_base REAL;

ALTER TABLE account ADD COLUMN ownerid TEXT;
ALTER TABLE account ADD COLUMN ownerid_type TEXT;
ALTER TABLE account ADD COLUMN revenue_base REAL;

ALTER TABLE contact ADD COLUMN ownerid TEXT;
ALTER TABLE contact ADD COLUMN ownerid_type TEXT;

CREATE TABLE systemuser (
    systemuserid          TEXT PRIMARY KEY,
    fullname              TEXT,
    firstname             TEXT,
    lastname              TEXT,
    internalemailaddress  TEXT,
    title                 TEXT,
    mobilephone           TEXT,
    address1_telephone1   TEXT,
    isdisabled            INTEGER,      -- 0 or 1; disabled owners are still sent (the link matters)
    modifiedon            TEXT,
    raw                   TEXT NOT NULL,
    source_file           TEXT NOT NULL,
    staged_run            INTEGER NOT NULL REFERENCES run (run_id),
    seen_run              INTEGER NOT NULL,
    deleted_run           INTEGER,
    deleted_reason        TEXT
) STRICT;

CREATE INDEX opportunity_by_owner ON opportunity (ownerid);
CREATE INDEX account_by_owner ON account (ownerid);
CREATE INDEX contact_by_owner ON contact (ownerid);

-- Sales persons are acknowledged like every other object: mkto_ack's CHECK widens (SQLite
-- changes a CHECK only by rebuilding the table).
CREATE TABLE mkto_ack_new (
    object      TEXT NOT NULL CHECK (object IN ('sales_person', 'company', 'lead', 'opportunity', 'opportunity_role')),
    key         TEXT NOT NULL,
    payload     TEXT NOT NULL,
    marketo_id  TEXT,
    run_id      INTEGER NOT NULL REFERENCES run (run_id),
    acked_at    TEXT NOT NULL,
    PRIMARY KEY (object, key)
) STRICT;
INSERT INTO mkto_ack_new SELECT object, key, payload, marketo_id, run_id, acked_at FROM mkto_ack;
DROP TABLE mkto_ack;
ALTER TABLE mkto_ack_new RENAME TO mkto_ack;

-- Stored delta links and watermarks select the old columns: the next live pull of every
-- entity set is a full one, so that existing records get their owners and base amounts.
DELETE FROM pull_state;
