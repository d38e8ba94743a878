-- rule: the Marketo leads to send (PRODUCT.md section 3, Contact -> lead): contacts that hold a
-- derived role; with `[export] leads = "all_in_scope"`, every live, in-scope contact with an email
-- too. Leads are looked up by email, so contacts whose emails differ only in letter case are one
-- lead: the most recently modified contact supplies its fields (then the lowest contactid). A
-- role holder without an email cannot become a lead and is listed with a skip_reason.
-- externalPersonId is that contact's contactid; externalSalesPersonId its owner's sales person.
-- key = the lower-cased email; contactids lists every contact folded into the lead.
CREATE VIEW mkto_lead AS
WITH candidate AS (
    SELECT
        c.contactid,
        c.emailaddress1,
        c.firstname,
        c.lastname,
        c.jobtitle,
        c.telephone1,
        c.modifiedon,
        -- nullif(lower(trim(emailaddress1)), ''), the column contact_by_email_key indexes.
        c.email_key,
        ca.accountid,
        osp.sales_person_id
    FROM contact c
    LEFT JOIN contact_account ca ON ca.contactid = c.contactid
    LEFT JOIN owner_sales_person osp ON osp.ownerid = c.ownerid AND osp.owner_type IS c.ownerid_type
    WHERE c.contactid IN (SELECT contactid FROM opportunity_contact_role)
       OR (coalesce((SELECT value FROM rule_setting WHERE name = 'export_leads'), 'role_holders') = 'all_in_scope'
           AND c.deleted_run IS NULL AND coalesce(c.new_synctomkto, 1) <> 0
           AND nullif(trim(c.emailaddress1), '') IS NOT NULL)
),
ranked AS (
    SELECT
        candidate.*,
        row_number() OVER by_email AS rank_in_email
    FROM candidate
    WHERE email_key IS NOT NULL
    WINDOW by_email AS (PARTITION BY email_key ORDER BY modifiedon DESC, contactid)
)
SELECT
    email_key AS key,
    contactid AS source_id,
    -- A subquery rather than a window over the whole email: SQLite skips it when the column is
    -- not read, as when the export rows are stored (the window took 2 s at 1M contacts), and
    -- finds an email's contacts through an index on email_key when it is.
    (
        SELECT json_group_array(folded.contactid)
        FROM (
            SELECT contactid FROM candidate WHERE email_key = ranked.email_key ORDER BY contactid
        ) folded
    ) AS contactids,
    json_object(
        'email', trim(emailaddress1),
        'firstName', firstname,
        'lastName', lastname,
        'title', jobtitle,
        'phone', telephone1,
        'externalCompanyId', (
            SELECT company.key FROM mkto_company company
            WHERE company.key = ranked.accountid AND company.skip_reason IS NULL
        ),
        'externalPersonId', contactid,
        'externalSalesPersonId', sales_person_id
    ) AS payload,
    NULL AS skip_reason,
    sales_person_id
FROM ranked
WHERE rank_in_email = 1
UNION ALL
SELECT NULL, contactid, json_array(contactid), NULL, 'contact has no email', NULL
FROM candidate
WHERE email_key IS NULL;
