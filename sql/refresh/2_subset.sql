-- refresh: the staged records the target roots depend on, as temp tables named after the
-- staging tables, which SQLite resolves before the stored ones: the views evaluated over them
-- give exact rows for every target root (other rows are discarded). A lead depends on every
-- contact with its email and on every opportunity that may give those contacts a role; a
-- company on every opportunity and role-holding contact that may reference it; an opportunity
-- on its customer, the customer's account, its connections and the records on their other side.
--
-- What it costs is lookups in the stored tables' indexes in no order, each a page read: so
-- each stored record is read once (the references come from the copies, not from the stored
-- records again), a connection is copied by the rowid its index gives, and the copies leave out
-- `raw`, which no view reads (the [mapping.*] fields are read from the stored records), so that
-- they and their indexes stay small.

-- The staged records as the copies hold them, without `raw` (the connections' copy names its
-- columns below). A column the views read must be named here: a view that names one left out
-- fails with "no such column" (a unit test compares the copies' columns with the staged
-- tables').
CREATE TEMP VIEW copied_opportunity AS
SELECT
    o.opportunityid, o.name, o.description, o.estimatedvalue, o.actualvalue, o.estimatedclosedate,
    o.actualclosedate, o.closeprobability, o.statecode, o.statuscode, o.stepname, o.createdon,
    o.modifiedon, o.customerid, o.customerid_type, o.parentaccountid, o.parentcontactid,
    o.new_synctomkto, o.source_file, o.staged_run, o.seen_run, o.deleted_run, o.deleted_reason,
    o.ownerid, o.ownerid_type, o.estimatedvalue_base, o.actualvalue_base
FROM main.opportunity o;
CREATE TEMP VIEW copied_contact AS
SELECT
    c.contactid, c.firstname, c.lastname, c.fullname, c.emailaddress1, c.jobtitle, c.telephone1,
    c.parentcustomerid, c.parentcustomerid_type, c.statecode, c.modifiedon, c.new_synctomkto,
    c.source_file, c.staged_run, c.seen_run, c.deleted_run, c.deleted_reason, c.ownerid,
    c.ownerid_type, c.email_key
FROM main.contact c;
CREATE TEMP VIEW copied_account AS
SELECT
    a.accountid, a.name, a.websiteurl, a.numberofemployees, a.revenue, a.industrycode,
    a.industrycode_label, a.telephone1, a.address1_line1, a.address1_line2, a.address1_line3,
    a.address1_city, a.address1_stateorprovince, a.address1_postalcode, a.address1_country,
    a.statecode, a.modifiedon, a.new_synctomkto, a.source_file, a.staged_run, a.seen_run,
    a.deleted_run, a.deleted_reason, a.ownerid, a.ownerid_type, a.revenue_base
FROM main.account a;

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

-- The connections of those opportunities, found by the rowids their indexes hold: looking each
-- one up by connectionid read its record twice.
CREATE TEMP TABLE connection AS
SELECT
    x.connectionid, x.record1id, x.record1id_type, x.record1objecttypecode, x.record1roleid,
    x.record1roleid_label, x.record2id, x.record2id_type, x.record2objecttypecode,
    x.record2roleid, x.record2roleid_label, x.relatedconnectionid, x.ismaster, x.statecode,
    x.modifiedon, x.source_file, x.staged_run, x.seen_run, x.deleted_run, x.deleted_reason
FROM main.connection x WHERE x.rowid IN (
    SELECT y.rowid FROM subset_opportunity s CROSS JOIN main.connection y ON y.record1id = s.id
    UNION SELECT y.rowid FROM subset_opportunity s CROSS JOIN main.connection y ON y.record2id = s.id
);

CREATE TEMP TABLE opportunity AS
SELECT o.* FROM subset_opportunity s CROSS JOIN copied_opportunity o ON o.opportunityid = s.id;

-- Every id the subset's opportunities, contacts and connections point at, for typing lookups.
CREATE TEMP TABLE subset_reference (id TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO subset_reference
SELECT v FROM (
    SELECT id AS v FROM subset_opportunity
    UNION ALL SELECT id FROM subset_lead_contact
    UNION ALL SELECT id FROM target_account
    UNION ALL SELECT customerid FROM temp.opportunity
    UNION ALL SELECT parentaccountid FROM temp.opportunity
    UNION ALL SELECT parentcontactid FROM temp.opportunity
    UNION ALL SELECT record1id FROM temp.connection
    UNION ALL SELECT record2id FROM temp.connection
) WHERE v IS NOT NULL;

CREATE TEMP TABLE contact AS
SELECT c.* FROM subset_reference r CROSS JOIN copied_contact c ON c.contactid = r.id;

-- Contacts' parents (account or contact) are typed by staged membership too: one level, the
-- parents of the contacts copied above, and the parents that are contacts copied as well.
INSERT OR IGNORE INTO subset_reference
SELECT parentcustomerid FROM temp.contact WHERE parentcustomerid IS NOT NULL;
INSERT INTO temp.contact
SELECT c.* FROM (
    SELECT DISTINCT parentcustomerid AS id FROM temp.contact
    WHERE parentcustomerid IS NOT NULL
      AND parentcustomerid NOT IN (SELECT contactid FROM temp.contact)
) p CROSS JOIN copied_contact c ON c.contactid = p.id;

-- Opportunities named by a reference other than the subset's own (the other side of a
-- connection), and the accounts.
INSERT INTO temp.opportunity
SELECT o.* FROM subset_reference r CROSS JOIN copied_opportunity o ON o.opportunityid = r.id
WHERE r.id NOT IN (SELECT id FROM subset_opportunity);
CREATE TEMP TABLE account AS
SELECT a.* FROM subset_reference r CROSS JOIN copied_account a ON a.accountid = r.id;

CREATE INDEX temp.subset_opportunity_key ON opportunity (opportunityid);
CREATE INDEX temp.subset_opportunity_customer ON opportunity (customerid);
CREATE INDEX temp.subset_contact_key ON contact (contactid);
-- mkto_lead's contactids looks up the contacts of each lead's email.
CREATE INDEX temp.subset_contact_email_key ON contact (email_key);
CREATE INDEX temp.subset_account_key ON account (accountid);
CREATE INDEX temp.subset_connection_record1 ON connection (record1id);
CREATE INDEX temp.subset_connection_record2 ON connection (record2id);
