-- rule: the opportunity contact roles to send (PRODUCT.md section 2): the candidates that were not
-- left out. One row per (opportunityid, contactid, role), the Marketo key once contacts are leads.
-- These are exactly the rows of opportunity_role_candidate whose left_out_reason is NULL, decided
-- here from the claims directly: of the claims that stand, the one first by (priority, source_id),
-- as opportunity_role_candidate ranks them. A GROUP BY keeps that claim (SQLite takes the other
-- columns from the row of the one min(); priority is a single digit, so the text orders as the
-- pair does) at about half the cost of ranking every claim.
CREATE VIEW opportunity_contact_role AS
SELECT
    opportunityid,
    contactid,
    role,
    is_primary,
    rule,
    source_id
FROM (
    SELECT
        opportunityid,
        contactid,
        role,
        is_primary,
        rule,
        source_id,
        min(priority || ' ' || source_id) AS first_claim
    FROM opportunity_role_claim
    WHERE left_out_reason IS NULL
    GROUP BY opportunityid, contactid, role
);
