-- rule: the Marketo companies to send (PRODUCT.md section 3, Account -> company): every account an
-- exported opportunity or lead points at; with `[export] companies = "all_in_scope"`, every
-- live, in-scope account too. Accounts deleted or filtered out (new_synctomkto false) get no
-- company and are absent here; an account referenced but never staged cannot be sent and is
-- listed with a skip_reason. annualRevenue is in the org's base currency (revenue_base) unless
-- `[export] currency = "transaction"`. externalSalesPersonId is the owner's sales person
-- (owner_sales_person), null for a team or an unknown user. key = externalCompanyId = accountid.
CREATE VIEW mkto_company AS
WITH setting AS (
    SELECT
        coalesce((SELECT value FROM rule_setting WHERE name = 'export_currency'), 'base') AS currency,
        coalesce((SELECT value FROM rule_setting WHERE name = 'export_companies'), 'referenced') AS companies,
        coalesce((SELECT value FROM rule_setting WHERE name = 'export_leads'), 'role_holders') AS leads
),
referenced AS (
    SELECT accountid FROM opportunity_account WHERE accountid IS NOT NULL
    UNION
    -- The accounts of the leads: role holders with an email, and with `[export] leads =
    -- "all_in_scope"` every live, in-scope contact with one. Role holders are read from the roles,
    -- which carry their email key, in contact order beside contact_account's.
    SELECT ca.accountid
    FROM opportunity_contact_role r
    JOIN contact_account ca ON ca.contactid = r.contactid
    WHERE r.lead_key IS NOT NULL AND ca.accountid IS NOT NULL
    UNION
    SELECT ca.accountid
    FROM contact_account ca
    JOIN contact c ON c.contactid = ca.contactid
    WHERE (SELECT leads FROM setting) = 'all_in_scope'
      AND ca.accountid IS NOT NULL
      AND nullif(trim(c.emailaddress1), '') IS NOT NULL
      AND c.deleted_run IS NULL AND coalesce(c.new_synctomkto, 1) <> 0
    UNION
    SELECT accountid FROM account
    WHERE (SELECT companies FROM setting) = 'all_in_scope'
      AND deleted_run IS NULL AND coalesce(new_synctomkto, 1) <> 0
)
SELECT
    r.accountid AS key,
    r.accountid AS source_id,
    CASE WHEN a.accountid IS NOT NULL THEN json_object(
        'externalCompanyId', a.accountid,
        'company', a.name,
        'website', a.websiteurl,
        'numberOfEmployees', a.numberofemployees,
        'annualRevenue', CASE (SELECT currency FROM setting) WHEN 'transaction' THEN a.revenue ELSE a.revenue_base END,
        'industry', a.industrycode_label,
        'mainPhone', a.telephone1,
        'billingStreet', nullif(trim(
            coalesce(a.address1_line1, '') || coalesce(char(10) || a.address1_line2, '')
                || coalesce(char(10) || a.address1_line3, ''),
            char(10)
        ), ''),
        'billingCity', a.address1_city,
        'billingState', a.address1_stateorprovince,
        'billingPostalCode', a.address1_postalcode,
        'billingCountry', a.address1_country,
        'externalSalesPersonId', osp.sales_person_id
    ) END AS payload,
    CASE WHEN a.accountid IS NULL THEN 'account not staged' END AS skip_reason,
    osp.sales_person_id
FROM referenced r
LEFT JOIN account a ON a.accountid = r.accountid
LEFT JOIN owner_sales_person osp ON osp.ownerid = a.ownerid AND osp.owner_type IS a.ownerid_type
WHERE a.accountid IS NULL
   OR (a.deleted_run IS NULL AND coalesce(a.new_synctomkto, 1) <> 0);
