-- refresh: the roots whose export rows the changes in export_dirty can alter (ARCHITECTURE.md,
-- "Export rows"). A root is re-evaluated whole: an opportunity with its roles, a lead (email key,
-- or contactid without one), a company (accountid). A record changed only in its own fields
-- ('row') re-evaluates its own rows; one whose links changed ('id') also the rows that follow
-- those links, and the ids it moved away from ('ref') are roots too.
-- Every statement reads the stored tables (main.*) and writes temp tables. The small temp
-- tables drive each join (CROSS JOIN fixes SQLite's join order), so that the cost follows the
-- change, not the org: without statistics the planner would rather scan the large table.
CREATE TEMP TABLE dirty_id (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO dirty_id SELECT value FROM main.export_dirty WHERE kind = 'id';
CREATE TEMP TABLE dirty_ref (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO dirty_ref SELECT value FROM main.export_dirty WHERE kind = 'ref';
CREATE TEMP TABLE dirty_row (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO dirty_row SELECT value FROM main.export_dirty WHERE kind = 'row';

-- Connections that changed, touch a record whose links changed, or carry a changed role.
CREATE TEMP TABLE dirty_connection (connectionid TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO dirty_connection
SELECT x.connectionid FROM dirty_id d CROSS JOIN main.connection x ON x.connectionid = d.id
UNION SELECT x.connectionid FROM dirty_id d CROSS JOIN main.connection x ON x.record1id = d.id
UNION SELECT x.connectionid FROM dirty_id d CROSS JOIN main.connection x ON x.record2id = d.id
UNION SELECT x.connectionid FROM dirty_id d CROSS JOIN main.connection x ON x.record1roleid = d.id
UNION SELECT x.connectionid FROM dirty_id d CROSS JOIN main.connection x ON x.record2roleid = d.id;

-- Opportunities, with whether their links may have changed (`linked`): then the contacts and
-- accounts they point at are roots too. Linked: changed so, an old side of a change, or
-- pointing at a customer, parent, customer's account or connection whose links changed. Not
-- linked: changed only in their own fields, or owned by a user who came or went.
CREATE TEMP TABLE target_opportunity (id TEXT PRIMARY KEY, linked INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO target_opportunity
SELECT o.opportunityid, 1 FROM dirty_id d CROSS JOIN main.opportunity o ON o.opportunityid = d.id
UNION SELECT o.opportunityid, 1 FROM dirty_ref d CROSS JOIN main.opportunity o ON o.opportunityid = d.id
UNION SELECT o.opportunityid, 1 FROM dirty_id d CROSS JOIN main.opportunity o ON o.customerid = d.id
UNION SELECT o.opportunityid, 1 FROM dirty_id d CROSS JOIN main.opportunity o ON o.parentaccountid = d.id
UNION SELECT o.opportunityid, 1 FROM dirty_id d CROSS JOIN main.opportunity o ON o.parentcontactid = d.id
UNION SELECT o.opportunityid, 1 FROM dirty_id d
    CROSS JOIN main.contact c ON c.parentcustomerid = d.id
    CROSS JOIN main.opportunity o ON o.customerid = c.contactid
UNION SELECT o.opportunityid, 1 FROM dirty_id d
    CROSS JOIN main.contact c ON c.parentcustomerid = d.id
    CROSS JOIN main.opportunity o ON o.parentcontactid = c.contactid
UNION SELECT o.opportunityid, 1 FROM dirty_connection dc
    CROSS JOIN main.connection x ON x.connectionid = dc.connectionid
    CROSS JOIN main.opportunity o ON o.opportunityid IN (x.record1id, x.record2id);
INSERT OR IGNORE INTO target_opportunity
SELECT o.opportunityid, 0 FROM dirty_row d CROSS JOIN main.opportunity o ON o.opportunityid = d.id
UNION SELECT o.opportunityid, 0 FROM dirty_id d CROSS JOIN main.opportunity o ON o.ownerid = d.id;

-- Contacts whose role, lead or account reference may change: their links changed, an old side
-- of a change, a side of a dirty connection (also when its opportunity side is not staged, so
-- no target opportunity leads to it), below an account whose links changed, or a candidate for
-- a role on a linked target opportunity. (Contacts that share a changed email are found
-- through target_lead.)
CREATE TEMP TABLE target_contact (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_contact
SELECT c.contactid FROM dirty_id d CROSS JOIN main.contact c ON c.contactid = d.id
UNION SELECT c.contactid FROM dirty_ref d CROSS JOIN main.contact c ON c.contactid = d.id
UNION SELECT c.contactid FROM dirty_connection dc
    CROSS JOIN main.connection x ON x.connectionid = dc.connectionid
    CROSS JOIN main.contact c ON c.contactid IN (x.record1id, x.record2id)
UNION SELECT c.contactid FROM dirty_id d CROSS JOIN main.contact c ON c.parentcustomerid = d.id
UNION SELECT c.contactid FROM target_opportunity t
    CROSS JOIN main.opportunity o ON o.opportunityid = t.id
    CROSS JOIN main.contact c ON c.contactid IN (o.customerid, o.parentcontactid)
    WHERE t.linked
UNION SELECT c.contactid FROM target_opportunity t
    CROSS JOIN main.connection x ON x.record1id = t.id
    CROSS JOIN main.contact c ON c.contactid = x.record2id
    WHERE t.linked
UNION SELECT c.contactid FROM target_opportunity t
    CROSS JOIN main.connection x ON x.record2id = t.id
    CROSS JOIN main.contact c ON c.contactid = x.record1id
    WHERE t.linked;

-- Leads: by email key, and by contactid for the contacts that have none: the old emails, the
-- target contacts', and those of contacts changed in their own fields or owned by a user who
-- came or went.
CREATE TEMP TABLE target_lead (root TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_lead
SELECT value FROM main.export_dirty WHERE kind = 'email'
UNION SELECT coalesce(c.email_key, c.contactid) FROM (
    SELECT id FROM target_contact
    UNION SELECT id FROM dirty_row
    UNION SELECT c.contactid FROM dirty_id d CROSS JOIN main.contact c ON c.ownerid = d.id
) t CROSS JOIN main.contact c ON c.contactid = t.id
UNION SELECT id FROM target_contact;

-- Companies: every id whose links changed or that a change moved away from (an account, or
-- one a lookup named), accounts changed in their own fields or owned by a user who came or
-- went, and the accounts of linked target opportunities and of target contacts.
CREATE TEMP TABLE target_account (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_account
SELECT id FROM dirty_id
UNION SELECT id FROM dirty_ref
UNION SELECT a.accountid FROM dirty_row d CROSS JOIN main.account a ON a.accountid = d.id
UNION SELECT a.accountid FROM dirty_id d CROSS JOIN main.account a ON a.ownerid = d.id
UNION SELECT v FROM (
    SELECT o.customerid AS v FROM target_opportunity t CROSS JOIN main.opportunity o ON o.opportunityid = t.id
        WHERE t.linked
    UNION ALL SELECT o.parentaccountid FROM target_opportunity t CROSS JOIN main.opportunity o ON o.opportunityid = t.id
        WHERE t.linked
    UNION ALL SELECT c.parentcustomerid FROM target_opportunity t
        CROSS JOIN main.opportunity o ON o.opportunityid = t.id
        CROSS JOIN main.contact c ON c.contactid IN (o.customerid, o.parentcontactid)
        WHERE t.linked
    UNION ALL SELECT c.parentcustomerid FROM target_contact t CROSS JOIN main.contact c ON c.contactid = t.id
) WHERE v IS NOT NULL;
