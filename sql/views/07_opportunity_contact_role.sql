-- rule: the opportunity contact roles to send (PRODUCT.md section 2): the candidates that were not
-- left out. One row per (opportunityid, contactid, role), the Marketo key once contacts are leads.
-- These are exactly the rows of opportunity_role_candidate whose left_out_reason is NULL, decided
-- here from the claims directly: of the claims that stand, the first by (priority, source_id), as
-- opportunity_role_candidate ranks them. Ranking only the claims that stand costs less than
-- ranking every claim; a window rather than a GROUP BY (cheaper still) lets SQLite push a filter
-- on opportunityid down into the claims, so that reading one opportunity's roles stays a lookup.
-- lead_key: the contact's email key, as opportunity_role_claim read it.
CREATE VIEW opportunity_contact_role AS
SELECT
    opportunityid,
    contactid,
    role,
    is_primary,
    rule,
    source_id,
    lead_key
FROM (
    SELECT
        claim.*,
        row_number() OVER (
            PARTITION BY opportunityid, contactid, role
            ORDER BY priority, source_id
        ) AS rank_in_role
    FROM opportunity_role_claim claim
    WHERE left_out_reason IS NULL
)
WHERE rank_in_role = 1;
