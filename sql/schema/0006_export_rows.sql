-- Export rows: the export views (mkto_*) materialized, kept current by re-evaluating the views
-- only for the records a pull changed, so that an idle or small cycle costs what changed and
-- not what exists (ARCHITECTURE.md, "Export rows"). The views stay the definition: `oppsync
-- verify` checks that these rows equal a fresh evaluation of them.

-- One row per row of an export view, as the view gives it, with the [mapping.*] fields merged.
--   object           'sales_person' | 'company' | 'lead' | 'opportunity' | 'opportunity_role'
--   root             what the row is derived for, the unit re-evaluated together: the accountid
--                    (companies), the email key or, without one, the contactid (leads), the
--                    opportunityid (opportunities and their roles), the systemuserid (sales persons)
--   key ... sales_person_id  the view's columns
--   pending          1 when push has something to send: the row can be sent and its payload is
--                    not the one Marketo last acknowledged (kept so by triggers on both tables)
CREATE TABLE export_row (
    object           TEXT NOT NULL,
    root             TEXT NOT NULL,
    key              TEXT,
    source_id        TEXT NOT NULL,
    payload          TEXT,
    skip_reason      TEXT,
    lead_key         TEXT,
    sales_person_id  TEXT,
    pending          INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX export_row_by_root ON export_row (object, root);
CREATE UNIQUE INDEX export_row_by_key ON export_row (object, key) WHERE key IS NOT NULL;
CREATE INDEX export_row_pending ON export_row (object, key) WHERE pending = 1;
CREATE INDEX export_row_skipped ON export_row (object)
    WHERE skip_reason IS NOT NULL OR key IS NULL OR payload IS NULL;
CREATE INDEX export_row_by_sales_person ON export_row (object, sales_person_id)
    WHERE sales_person_id IS NOT NULL;

-- What the rules derived per in-scope opportunity (opportunity_account, opportunity_contact_role),
-- refreshed with the export rows, so that `status` counts them without evaluating the views.
CREATE TABLE derived_opportunity (
    opportunityid  TEXT PRIMARY KEY,
    accountid      TEXT,
    contact_roles  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Totals that plan and status read instead of counting millions of rows, kept by every refresh:
--   'rows:<object>'                 the export rows of that object
--   'opportunities', 'opportunities_with_account', 'contact_roles'
--                                   count(*), count(accountid), sum(contact_roles) of derived_opportunity
CREATE TABLE export_total (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The newest change, and the newest one Marketo holds (status's lag, pull's watermark).
CREATE INDEX opportunity_by_modifiedon ON opportunity (modifiedon);

-- Tombstones, counted by `status` on these instead of reading every record.
CREATE INDEX opportunity_deleted ON opportunity (deleted_run) WHERE deleted_run IS NOT NULL;
CREATE INDEX account_deleted ON account (deleted_run) WHERE deleted_run IS NOT NULL;
CREATE INDEX contact_deleted ON contact (deleted_run) WHERE deleted_run IS NOT NULL;
CREATE INDEX connection_deleted ON connection (deleted_run) WHERE deleted_run IS NOT NULL;
CREATE INDEX connectionrole_deleted ON connectionrole (deleted_run) WHERE deleted_run IS NOT NULL;
CREATE INDEX systemuser_deleted ON systemuser (deleted_run) WHERE deleted_run IS NOT NULL;

-- Keys Marketo acknowledged that the views no longer give: candidates for deletion, which the
-- plan's delete policy then decides on. A key leaves when it is given again or its
-- acknowledgement is removed.
CREATE TABLE export_removed (
    object  TEXT NOT NULL,
    key     TEXT NOT NULL,
    PRIMARY KEY (object, key)
) STRICT, WITHOUT ROWID;

-- Whether export_row is current, and for which definition.
--   built        0 until the first full evaluation; staging triggers record changes only after it
--   definition   the view SQL, rule settings and mappings the rows were evaluated with; any
--                difference means a full re-evaluation
CREATE TABLE export_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    built       INTEGER NOT NULL DEFAULT 0,
    definition  TEXT
) STRICT;
INSERT INTO export_state (id, built) VALUES (1, 0);

-- What changed in staging since export_row was last refreshed, as the refresh needs it:
--   'id'     a record changed in a way that can move rows elsewhere: created, tombstoned, in or
--            out of scope, or one of the links the rules follow changed (a customer, a parent,
--            an email, a connection's sides or role, a role's category, a user created or gone)
--   'ref'    an id such a change moved away from (the old customer, parent or connection side)
--   'row'    a record changed only in fields its own export rows carry (an amount, a name, a
--            job title, an owner): its rows are re-evaluated, nothing else
--   'email'  an email key a contact had before a change
-- Refresh turns these into the roots to re-evaluate (sql/refresh/1_targets.sql), then empties
-- the table.
CREATE TABLE export_dirty (
    kind   TEXT NOT NULL CHECK (kind IN ('id', 'ref', 'row', 'email')),
    value  TEXT NOT NULL,
    PRIMARY KEY (kind, value)
) STRICT, WITHOUT ROWID;

-- The lookups the dirty roots are found through.
CREATE INDEX opportunity_by_parentaccount ON opportunity (parentaccountid);
CREATE INDEX opportunity_by_parentcontact ON opportunity (parentcontactid);
CREATE INDEX connection_role1 ON connection (record1roleid);
CREATE INDEX connection_role2 ON connection (record2roleid);
-- A contact's lead key, as mkto_lead forms it. A column, not an expression index: SQLite uses
-- an expression index for a constant but not for a join.
ALTER TABLE contact ADD COLUMN email_key TEXT GENERATED ALWAYS AS (nullif(lower(trim(emailaddress1)), '')) VIRTUAL;
CREATE INDEX contact_by_email_key ON contact (email_key);

-- Staging records what it changes. A record staged again unchanged (same raw, same tombstone)
-- fires nothing, so a full pull of an unchanged org leaves no work. (Inside a trigger an
-- `OR IGNORE` would give way to the staging upsert's conflict policy; `ON CONFLICT DO NOTHING`
-- does not.)
CREATE TRIGGER opportunity_dirty_insert AFTER INSERT ON opportunity
WHEN (SELECT built FROM export_state)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.opportunityid) ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER opportunity_dirty_update AFTER UPDATE ON opportunity
WHEN (SELECT built FROM export_state)
    AND (OLD.raw IS NOT NEW.raw OR OLD.deleted_run IS NOT NEW.deleted_run)
BEGIN
    INSERT INTO export_dirty (kind, value)
    VALUES (CASE WHEN OLD.deleted_run IS NOT NEW.deleted_run OR OLD.new_synctomkto IS NOT NEW.new_synctomkto
                   OR OLD.customerid IS NOT NEW.customerid OR OLD.customerid_type IS NOT NEW.customerid_type
                   OR OLD.parentaccountid IS NOT NEW.parentaccountid OR OLD.parentcontactid IS NOT NEW.parentcontactid
                 THEN 'id' ELSE 'row' END, NEW.opportunityid)
    ON CONFLICT DO NOTHING;
    INSERT INTO export_dirty (kind, value)
    SELECT 'ref', v FROM (
        SELECT OLD.customerid AS v WHERE OLD.customerid IS NOT NEW.customerid
        UNION ALL SELECT OLD.parentaccountid WHERE OLD.parentaccountid IS NOT NEW.parentaccountid
        UNION ALL SELECT OLD.parentcontactid WHERE OLD.parentcontactid IS NOT NEW.parentcontactid
    ) WHERE v IS NOT NULL ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER account_dirty_insert AFTER INSERT ON account
WHEN (SELECT built FROM export_state)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.accountid) ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER account_dirty_update AFTER UPDATE ON account
WHEN (SELECT built FROM export_state)
    AND (OLD.raw IS NOT NEW.raw OR OLD.deleted_run IS NOT NEW.deleted_run)
BEGIN
    INSERT INTO export_dirty (kind, value)
    VALUES (CASE WHEN OLD.deleted_run IS NOT NEW.deleted_run OR OLD.new_synctomkto IS NOT NEW.new_synctomkto
                 THEN 'id' ELSE 'row' END, NEW.accountid)
    ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER contact_dirty_insert AFTER INSERT ON contact
WHEN (SELECT built FROM export_state)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.contactid) ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER contact_dirty_update AFTER UPDATE ON contact
WHEN (SELECT built FROM export_state)
    AND (OLD.raw IS NOT NEW.raw OR OLD.deleted_run IS NOT NEW.deleted_run)
BEGIN
    INSERT INTO export_dirty (kind, value)
    VALUES (CASE WHEN OLD.deleted_run IS NOT NEW.deleted_run OR OLD.new_synctomkto IS NOT NEW.new_synctomkto
                   OR OLD.emailaddress1 IS NOT NEW.emailaddress1 OR OLD.parentcustomerid IS NOT NEW.parentcustomerid
                   OR OLD.parentcustomerid_type IS NOT NEW.parentcustomerid_type
                 THEN 'id' ELSE 'row' END, NEW.contactid)
    ON CONFLICT DO NOTHING;
    INSERT INTO export_dirty (kind, value)
    SELECT 'ref', OLD.parentcustomerid
    WHERE OLD.parentcustomerid IS NOT NULL AND OLD.parentcustomerid IS NOT NEW.parentcustomerid
    ON CONFLICT DO NOTHING;
    INSERT INTO export_dirty (kind, value)
    SELECT 'email', lower(trim(OLD.emailaddress1))
    WHERE nullif(trim(OLD.emailaddress1), '') IS NOT NULL AND OLD.emailaddress1 IS NOT NEW.emailaddress1
    ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER connection_dirty_insert AFTER INSERT ON connection
WHEN (SELECT built FROM export_state)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.connectionid) ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER connection_dirty_update AFTER UPDATE ON connection
WHEN (SELECT built FROM export_state)
    AND (OLD.raw IS NOT NEW.raw OR OLD.deleted_run IS NOT NEW.deleted_run)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.connectionid) ON CONFLICT DO NOTHING;
    INSERT INTO export_dirty (kind, value)
    SELECT 'ref', v FROM (
        SELECT OLD.record1id AS v WHERE OLD.record1id IS NOT NEW.record1id
        UNION ALL SELECT OLD.record2id WHERE OLD.record2id IS NOT NEW.record2id
    ) WHERE v IS NOT NULL ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER connectionrole_dirty_insert AFTER INSERT ON connectionrole
WHEN (SELECT built FROM export_state)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.connectionroleid) ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER connectionrole_dirty_update AFTER UPDATE ON connectionrole
WHEN (SELECT built FROM export_state)
    AND (OLD.raw IS NOT NEW.raw OR OLD.deleted_run IS NOT NEW.deleted_run)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.connectionroleid) ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER systemuser_dirty_insert AFTER INSERT ON systemuser
WHEN (SELECT built FROM export_state)
BEGIN
    INSERT INTO export_dirty (kind, value) VALUES ('id', NEW.systemuserid) ON CONFLICT DO NOTHING;
END;
CREATE TRIGGER systemuser_dirty_update AFTER UPDATE ON systemuser
WHEN (SELECT built FROM export_state)
    AND (OLD.raw IS NOT NEW.raw OR OLD.deleted_run IS NOT NEW.deleted_run)
BEGIN
    INSERT INTO export_dirty (kind, value)
    VALUES (CASE WHEN OLD.deleted_run IS NOT NEW.deleted_run THEN 'id' ELSE 'row' END, NEW.systemuserid)
    ON CONFLICT DO NOTHING;
END;

-- What Marketo acknowledged decides `pending`, in the transaction that records it.
CREATE TRIGGER mkto_ack_pending_insert AFTER INSERT ON mkto_ack
BEGIN
    UPDATE export_row
    SET pending = (skip_reason IS NULL AND payload IS NOT NULL AND payload IS NOT NEW.payload)
    WHERE object = NEW.object AND key = NEW.key;
END;
CREATE TRIGGER mkto_ack_pending_update AFTER UPDATE OF payload ON mkto_ack
BEGIN
    UPDATE export_row
    SET pending = (skip_reason IS NULL AND payload IS NOT NULL AND payload IS NOT NEW.payload)
    WHERE object = NEW.object AND key = NEW.key;
END;
CREATE TRIGGER mkto_ack_pending_delete AFTER DELETE ON mkto_ack
BEGIN
    UPDATE export_row
    SET pending = (skip_reason IS NULL AND payload IS NOT NULL)
    WHERE object = OLD.object AND key = OLD.key;
    DELETE FROM export_removed WHERE object = OLD.object AND key = OLD.key;
END;
