-- rule: a contact's account is its parentcustomerid when that is an account (PRODUCT.md section 2,
-- "Contact's account"), typed by the annotation, else by staged membership. A contact whose parent
-- is another contact, or whose parent cannot be typed, has no account. Deleted contacts are left out.
CREATE VIEW contact_account AS
SELECT
    contactid,
    CASE WHEN parent_type = 'account' THEN parentcustomerid END AS accountid,
    parentcustomerid,
    parent_type,
    resolved_by
FROM (
    SELECT
        contactid,
        parentcustomerid,
        resolved_by,
        CASE resolved_by
            WHEN 'annotation' THEN parentcustomerid_type
            WHEN 'staged_account' THEN 'account'
            WHEN 'staged_contact' THEN 'contact'
        END AS parent_type
    FROM (
        SELECT
            c.contactid,
            c.parentcustomerid,
            c.parentcustomerid_type,
            CASE
                WHEN c.parentcustomerid IS NULL THEN 'no_parent'
                WHEN c.parentcustomerid_type IN ('account', 'contact') THEN 'annotation'
                WHEN EXISTS (SELECT 1 FROM account a WHERE a.accountid = c.parentcustomerid) THEN 'staged_account'
                WHEN EXISTS (SELECT 1 FROM contact p WHERE p.contactid = c.parentcustomerid) THEN 'staged_contact'
                ELSE 'unresolved'
            END AS resolved_by
        FROM contact c
        WHERE c.deleted_run IS NULL
    )
);
