-- rule: every staged connection row seen from its opportunity side (PRODUCT.md section 2,
-- "Stakeholder connection"). A side's type comes from its lookuplogicalname annotation, else its
-- objecttypecode (1 account, 2 contact, 3 opportunity, 8 systemuser, 9 team), else staged membership.
-- The role that matters is the other (contact) side's: record2roleid when record1 is the
-- opportunity, record1roleid when record2 is. Tombstoned connections stay here so that explain can
-- say they were deleted.
CREATE VIEW opportunity_connection AS
WITH typed AS (
    SELECT
        -- Only the columns read below: copying whole records (raw included) cost more than
        -- the rule itself on large orgs.
        c.connectionid, c.record1id, c.record2id, c.record1roleid, c.record2roleid,
        c.record1roleid_label, c.record2roleid_label, c.relatedconnectionid, c.statecode,
        c.deleted_run,
        coalesce(
            c.record1id_type,
            CASE c.record1objecttypecode
                WHEN 1 THEN 'account' WHEN 2 THEN 'contact' WHEN 3 THEN 'opportunity'
                WHEN 8 THEN 'systemuser' WHEN 9 THEN 'team'
            END,
            CASE
                WHEN EXISTS (SELECT 1 FROM opportunity o WHERE o.opportunityid = c.record1id) THEN 'opportunity'
                WHEN EXISTS (SELECT 1 FROM contact t WHERE t.contactid = c.record1id) THEN 'contact'
                WHEN EXISTS (SELECT 1 FROM account a WHERE a.accountid = c.record1id) THEN 'account'
            END
        ) AS record1_kind,
        coalesce(
            c.record2id_type,
            CASE c.record2objecttypecode
                WHEN 1 THEN 'account' WHEN 2 THEN 'contact' WHEN 3 THEN 'opportunity'
                WHEN 8 THEN 'systemuser' WHEN 9 THEN 'team'
            END,
            CASE
                WHEN EXISTS (SELECT 1 FROM opportunity o WHERE o.opportunityid = c.record2id) THEN 'opportunity'
                WHEN EXISTS (SELECT 1 FROM contact t WHERE t.contactid = c.record2id) THEN 'contact'
                WHEN EXISTS (SELECT 1 FROM account a WHERE a.accountid = c.record2id) THEN 'account'
            END
        ) AS record2_kind
    FROM connection c
)
SELECT
    connectionid,
    record1id AS opportunityid,
    1 AS opportunity_is_record1,
    record2id AS other_id,
    record2_kind AS other_kind,
    record2roleid AS role_id,
    record2roleid_label AS role_label,
    relatedconnectionid,
    statecode,
    deleted_run
FROM typed
WHERE record1_kind = 'opportunity' AND record1id IS NOT NULL
UNION ALL
SELECT
    connectionid,
    record2id,
    0,
    record1id,
    record1_kind,
    record1roleid,
    record1roleid_label,
    relatedconnectionid,
    statecode,
    deleted_run
FROM typed
WHERE record2_kind = 'opportunity' AND record2id IS NOT NULL;
