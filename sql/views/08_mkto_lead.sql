-- rule: the Marketo leads to send (PRODUCT.md section 3, Contact -> lead): only contacts that hold
-- a derived role. Leads are looked up by email, so contacts whose emails differ only in letter case
-- are one lead: the most recently modified contact supplies its fields (then the lowest
-- contactid). A contact without an email cannot become a lead and is listed with a skip_reason.
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
        nullif(lower(trim(c.emailaddress1)), '') AS email_key,
        ca.accountid
    FROM contact c
    LEFT JOIN contact_account ca ON ca.contactid = c.contactid
    WHERE c.contactid IN (SELECT contactid FROM opportunity_contact_role)
),
ranked AS (
    SELECT
        candidate.*,
        row_number() OVER by_email AS rank_in_email,
        json_group_array(contactid) OVER (
            PARTITION BY email_key ORDER BY contactid
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) AS contactids
    FROM candidate
    WHERE email_key IS NOT NULL
    WINDOW by_email AS (PARTITION BY email_key ORDER BY modifiedon DESC, contactid)
)
SELECT
    email_key AS key,
    contactid AS source_id,
    contactids,
    json_object(
        'email', trim(emailaddress1),
        'firstName', firstname,
        'lastName', lastname,
        'title', jobtitle,
        'phone', telephone1,
        'externalCompanyId', (
            SELECT company.key FROM mkto_company company
            WHERE company.key = ranked.accountid AND company.skip_reason IS NULL
        )
    ) AS payload,
    NULL AS skip_reason
FROM ranked
WHERE rank_in_email = 1
UNION ALL
SELECT NULL, contactid, json_array(contactid), NULL, 'contact has no email'
FROM candidate
WHERE email_key IS NULL;
