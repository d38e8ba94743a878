-- rule: the opportunity contact roles to send (PRODUCT.md section 2): the candidates that were not
-- left out. One row per (opportunityid, contactid, role), the Marketo key once contacts are leads.
CREATE VIEW opportunity_contact_role AS
SELECT
    opportunityid,
    contactid,
    role,
    is_primary,
    rule,
    source_id
FROM opportunity_role_candidate
WHERE left_out_reason IS NULL;
