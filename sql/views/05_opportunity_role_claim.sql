-- rule: every claim of a contact to a role on a staged, in-scope opportunity, with the reason the
-- rules leave it out (NULL when it stands). Claims are the customer contact ('customer_contact',
-- primary, role from the customer_contact_role setting) and each connection to the opportunity
-- ('stakeholder'). A stakeholder counts when the connection is active (statecode 0; a missing
-- statecode was not selected and is read as active), the other side is a staged, live, in-scope
-- contact, and its role is null (named by stakeholder_default_role), not staged (named by its
-- FormattedValue, else the default) or staged, live, active and of a stakeholder category.
-- priority orders the claims to one role: the customer first (0), then the opportunity side of a
-- reciprocal pair (1), then the other side (2). opportunity_role_candidate and
-- opportunity_contact_role decide between claims to the same role. lead_key is the contact's email
-- key (the lead it is sent as), read here with the rest of the contact so that the views after it
-- need not look each role's contact up again.
CREATE VIEW opportunity_role_claim AS
WITH
setting AS (
    SELECT
        (SELECT value FROM rule_setting WHERE name = 'customer_contact_role') AS customer_role,
        (SELECT value FROM rule_setting WHERE name = 'stakeholder_default_role') AS default_role,
        coalesce((SELECT value FROM rule_setting WHERE name = 'stakeholder_categories'), '[1000]') AS categories
),
customer AS (
    SELECT
        oc.opportunityid,
        oc.customer_id AS contactid,
        s.customer_role AS role,
        1 AS is_primary,
        'customer_contact' AS rule,
        oc.opportunityid AS source_id,
        CASE
            WHEN c.contactid IS NULL THEN 'contact not staged'
            WHEN c.deleted_run IS NOT NULL THEN 'contact deleted'
            WHEN c.new_synctomkto = 0 THEN 'contact filtered out (new_synctomkto = false)'
        END AS left_out_reason,
        0 AS priority,
        c.email_key AS lead_key
    FROM opportunity_customer oc
    CROSS JOIN setting s
    LEFT JOIN contact c ON c.contactid = oc.customer_id
    WHERE oc.customer_type = 'contact'
),
stakeholder AS (
    SELECT
        x.opportunityid,
        x.other_id AS contactid,
        CASE
            WHEN x.role_id IS NULL THEN s.default_role
            WHEN r.connectionroleid IS NOT NULL THEN coalesce(r.name, x.role_label, s.default_role)
            ELSE coalesce(x.role_label, s.default_role)
        END AS role,
        0 AS is_primary,
        'stakeholder' AS rule,
        x.connectionid AS source_id,
        CASE
            WHEN x.deleted_run IS NOT NULL THEN 'connection deleted'
            WHEN coalesce(x.statecode, 0) <> 0 THEN 'connection inactive'
            WHEN x.other_kind IS NOT 'contact'
                THEN 'other side is not a contact (' || coalesce(x.other_kind, 'unknown type') || ')'
            WHEN c.contactid IS NULL THEN 'contact not staged'
            WHEN c.deleted_run IS NOT NULL THEN 'contact deleted'
            WHEN c.new_synctomkto = 0 THEN 'contact filtered out (new_synctomkto = false)'
            WHEN r.connectionroleid IS NULL THEN NULL
            WHEN r.deleted_run IS NOT NULL THEN 'role deleted'
            WHEN coalesce(r.statecode, 0) <> 0 THEN 'role inactive'
            WHEN r.category IS NULL
                OR r.category NOT IN (SELECT j.value FROM json_each(s.categories) j)
                THEN 'role not a stakeholder category (category ' || coalesce(r.category, 'null') || ')'
        END AS left_out_reason,
        CASE WHEN x.opportunity_is_record1 = 1 THEN 1 ELSE 2 END AS priority,
        c.email_key AS lead_key
    FROM opportunity_connection x
    JOIN opportunity_customer oc ON oc.opportunityid = x.opportunityid
    CROSS JOIN setting s
    LEFT JOIN contact c ON c.contactid = x.other_id
    LEFT JOIN connectionrole r ON r.connectionroleid = x.role_id
)
SELECT * FROM customer
UNION ALL
SELECT * FROM stakeholder;
