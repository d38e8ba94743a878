-- rule: the Potential Customer of each staged, in-scope opportunity (PRODUCT.md section 2, "Customer type").
-- customerid is typed by its lookuplogicalname annotation; without it, by whether the id is a staged
-- account or contact, or equals parentaccountid / parentcontactid. A null customerid falls back to
-- parentaccountid, then parentcontactid: the account wins, as in Dynamics. An id none of these tests
-- can type is left untyped ('unresolved') rather than guessed.
CREATE VIEW opportunity_customer AS
SELECT
    opportunityid,
    CASE resolved_by
        WHEN 'annotation' THEN annotated_type
        WHEN 'staged_account' THEN 'account'
        WHEN 'staged_contact' THEN 'contact'
        WHEN 'equals_parentaccountid' THEN 'account'
        WHEN 'equals_parentcontactid' THEN 'contact'
        WHEN 'fallback_parentaccountid' THEN 'account'
        WHEN 'fallback_parentcontactid' THEN 'contact'
    END AS customer_type,
    customer_id,
    resolved_by
FROM (
    SELECT
        o.opportunityid,
        o.customerid_type AS annotated_type,
        coalesce(o.customerid, o.parentaccountid, o.parentcontactid) AS customer_id,
        CASE
            WHEN o.customerid IS NULL THEN
                CASE
                    WHEN o.parentaccountid IS NOT NULL THEN 'fallback_parentaccountid'
                    WHEN o.parentcontactid IS NOT NULL THEN 'fallback_parentcontactid'
                    ELSE 'no_customer'
                END
            WHEN o.customerid_type IN ('account', 'contact') THEN 'annotation'
            WHEN EXISTS (SELECT 1 FROM account a WHERE a.accountid = o.customerid) THEN 'staged_account'
            WHEN EXISTS (SELECT 1 FROM contact c WHERE c.contactid = o.customerid) THEN 'staged_contact'
            WHEN o.customerid = o.parentaccountid THEN 'equals_parentaccountid'
            WHEN o.customerid = o.parentcontactid THEN 'equals_parentcontactid'
            ELSE 'unresolved'
        END AS resolved_by
    FROM opportunity o
    WHERE o.deleted_run IS NULL
      AND coalesce(o.new_synctomkto, 1) <> 0
);
