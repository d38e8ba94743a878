-- refresh: the roots whose export rows the changes in export_dirty can alter (ARCHITECTURE.md,
-- "Export rows"). A root is re-evaluated whole: an opportunity with its roles, a lead (email key,
-- or contactid without one), a company (accountid). Dirty ids hold the GUIDs a changed record
-- held before and after the change, so a moved lookup marks both its old and new target.
-- Every statement reads the stored tables (main.*) and writes temp tables.
CREATE TEMP TABLE dirty_id (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO dirty_id SELECT value FROM main.export_dirty WHERE kind = 'id';

-- Connections that changed, touch a changed record, or carry a changed connection role.
CREATE TEMP TABLE dirty_connection (connectionid TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO dirty_connection
SELECT x.connectionid FROM dirty_id d JOIN main.connection x ON x.record1id = d.id
UNION SELECT x.connectionid FROM dirty_id d JOIN main.connection x ON x.record2id = d.id
UNION SELECT x.connectionid FROM dirty_id d JOIN main.connection x ON x.record1roleid = d.id
UNION SELECT x.connectionid FROM dirty_id d JOIN main.connection x ON x.record2roleid = d.id;

-- Opportunities: changed, or whose customer, parent, customer's account, owner or connection
-- changed.
CREATE TEMP TABLE target_opportunity (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_opportunity
SELECT o.opportunityid FROM dirty_id d JOIN main.opportunity o ON o.opportunityid = d.id
UNION SELECT o.opportunityid FROM dirty_id d JOIN main.opportunity o ON o.customerid = d.id
UNION SELECT o.opportunityid FROM dirty_id d JOIN main.opportunity o ON o.parentaccountid = d.id
UNION SELECT o.opportunityid FROM dirty_id d JOIN main.opportunity o ON o.parentcontactid = d.id
UNION SELECT o.opportunityid FROM dirty_id d JOIN main.opportunity o ON o.ownerid = d.id
UNION SELECT o.opportunityid FROM dirty_id d
    JOIN main.contact c ON c.parentcustomerid = d.id
    JOIN main.opportunity o ON o.customerid = c.contactid
UNION SELECT o.opportunityid FROM dirty_id d
    JOIN main.contact c ON c.parentcustomerid = d.id
    JOIN main.opportunity o ON o.parentcontactid = c.contactid
UNION SELECT o.opportunityid FROM dirty_connection dc
    JOIN main.connection x ON x.connectionid = dc.connectionid
    JOIN main.opportunity o ON o.opportunityid IN (x.record1id, x.record2id);

-- Contacts whose lead may change: changed, re-parented, re-owned, or a candidate for a role on
-- a target opportunity. (Contacts that share a changed email are found through target_lead.)
CREATE TEMP TABLE target_contact (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_contact
SELECT c.contactid FROM dirty_id d JOIN main.contact c ON c.contactid = d.id
UNION SELECT c.contactid FROM dirty_id d JOIN main.contact c ON c.parentcustomerid = d.id
UNION SELECT c.contactid FROM dirty_id d JOIN main.contact c ON c.ownerid = d.id
UNION SELECT c.contactid FROM target_opportunity t
    JOIN main.opportunity o ON o.opportunityid = t.id
    JOIN main.contact c ON c.contactid IN (o.customerid, o.parentcontactid)
UNION SELECT c.contactid FROM target_opportunity t
    JOIN main.connection x ON x.record1id = t.id
    JOIN main.contact c ON c.contactid = x.record2id
UNION SELECT c.contactid FROM target_opportunity t
    JOIN main.connection x ON x.record2id = t.id
    JOIN main.contact c ON c.contactid = x.record1id;

-- Leads: by email key, and by contactid for the contacts that have none.
CREATE TEMP TABLE target_lead (root TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_lead
SELECT value FROM main.export_dirty WHERE kind = 'email'
UNION SELECT t.id FROM target_contact t
UNION SELECT nullif(lower(trim(c.emailaddress1)), '') FROM target_contact t
    JOIN main.contact c ON c.contactid = t.id
    WHERE nullif(lower(trim(c.emailaddress1)), '') IS NOT NULL;

-- Companies: every changed id (an account, or one a changed lookup named), re-owned accounts,
-- and the accounts of target opportunities and contacts.
CREATE TEMP TABLE target_account (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO target_account
SELECT id FROM dirty_id
UNION SELECT a.accountid FROM dirty_id d JOIN main.account a ON a.ownerid = d.id
UNION SELECT v FROM (
    SELECT o.customerid AS v FROM target_opportunity t JOIN main.opportunity o ON o.opportunityid = t.id
    UNION ALL SELECT o.parentaccountid FROM target_opportunity t JOIN main.opportunity o ON o.opportunityid = t.id
    UNION ALL SELECT c.parentcustomerid FROM target_opportunity t
        JOIN main.opportunity o ON o.opportunityid = t.id
        JOIN main.contact c ON c.contactid IN (o.customerid, o.parentcontactid)
    UNION ALL SELECT c.parentcustomerid FROM target_contact t JOIN main.contact c ON c.contactid = t.id
) WHERE v IS NOT NULL;
