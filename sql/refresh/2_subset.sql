-- refresh: the staged records the target roots depend on, as temp tables named after the
-- staging tables, which SQLite resolves before the stored ones: the views evaluated over them
-- give exact rows for every target root (other rows are discarded). A lead depends on every
-- contact with its email and on every opportunity that may give those contacts a role; a
-- company on every opportunity and role-holding contact that may reference it; an opportunity
-- on its customer, the customer's account, its connections and the records on their other side.

-- Contacts whose role, lead or account reference is decided here.
CREATE TEMP TABLE subset_lead_contact (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO subset_lead_contact
SELECT c.contactid FROM target_lead t CROSS JOIN main.contact c ON c.email_key = t.root
UNION SELECT c.contactid FROM target_lead t CROSS JOIN main.contact c ON c.contactid = t.root
UNION SELECT c.contactid FROM target_account t CROSS JOIN main.contact c ON c.parentcustomerid = t.id;

CREATE TEMP TABLE subset_opportunity (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO subset_opportunity
SELECT id FROM target_opportunity
UNION SELECT o.opportunityid FROM subset_lead_contact s CROSS JOIN main.opportunity o ON o.customerid = s.id
UNION SELECT o.opportunityid FROM subset_lead_contact s CROSS JOIN main.opportunity o ON o.parentcontactid = s.id
UNION SELECT x.record2id FROM subset_lead_contact s CROSS JOIN main.connection x ON x.record1id = s.id
UNION SELECT x.record1id FROM subset_lead_contact s CROSS JOIN main.connection x ON x.record2id = s.id
UNION SELECT o.opportunityid FROM target_account t CROSS JOIN main.opportunity o ON o.customerid = t.id
UNION SELECT o.opportunityid FROM target_account t CROSS JOIN main.opportunity o ON o.parentaccountid = t.id;

CREATE TEMP TABLE connection AS
SELECT x.* FROM main.connection x WHERE x.connectionid IN (
    SELECT y.connectionid FROM subset_opportunity s CROSS JOIN main.connection y ON y.record1id = s.id
    UNION SELECT y.connectionid FROM subset_opportunity s CROSS JOIN main.connection y ON y.record2id = s.id
);

-- Every id the subset's opportunities, contacts and connections point at, for typing lookups.
CREATE TEMP TABLE subset_reference (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO subset_reference
SELECT v FROM (
    SELECT id AS v FROM subset_opportunity
    UNION ALL SELECT id FROM subset_lead_contact
    UNION ALL SELECT id FROM target_account
    UNION ALL SELECT o.customerid FROM subset_opportunity s CROSS JOIN main.opportunity o ON o.opportunityid = s.id
    UNION ALL SELECT o.parentaccountid FROM subset_opportunity s CROSS JOIN main.opportunity o ON o.opportunityid = s.id
    UNION ALL SELECT o.parentcontactid FROM subset_opportunity s CROSS JOIN main.opportunity o ON o.opportunityid = s.id
    UNION ALL SELECT record1id FROM temp.connection
    UNION ALL SELECT record2id FROM temp.connection
) WHERE v IS NOT NULL;

-- Contacts' parents (account or contact) are typed by staged membership too.
INSERT OR IGNORE INTO subset_reference
SELECT c.parentcustomerid FROM subset_reference r
    CROSS JOIN main.contact c ON c.contactid = r.id
    WHERE c.parentcustomerid IS NOT NULL;

CREATE TEMP TABLE opportunity AS
SELECT o.* FROM subset_reference r CROSS JOIN main.opportunity o ON o.opportunityid = r.id;
CREATE TEMP TABLE contact AS
SELECT c.* FROM subset_reference r CROSS JOIN main.contact c ON c.contactid = r.id;
CREATE TEMP TABLE account AS
SELECT a.* FROM subset_reference r CROSS JOIN main.account a ON a.accountid = r.id;

CREATE INDEX temp.subset_opportunity_key ON opportunity (opportunityid);
CREATE INDEX temp.subset_opportunity_customer ON opportunity (customerid);
CREATE INDEX temp.subset_contact_key ON contact (contactid);
-- mkto_lead's contactids looks up the contacts of each lead's email.
CREATE INDEX temp.subset_contact_email_key ON contact (email_key);
CREATE INDEX temp.subset_account_key ON account (accountid);
CREATE INDEX temp.subset_connection_record1 ON connection (record1id);
CREATE INDEX temp.subset_connection_record2 ON connection (record2id);
