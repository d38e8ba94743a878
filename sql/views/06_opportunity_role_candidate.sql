-- rule: every contact considered for a role (opportunity_role_claim), with the reason it was
-- left out (NULL when it yields a role). One claim per (opportunity, contact, role) yields the
-- role: the customer claim first, then the opportunity-side claim of a reciprocal pair, then the
-- lowest source id; the others are duplicates.
CREATE VIEW opportunity_role_candidate AS
WITH ranked AS (
    SELECT
        claim.*,
        row_number() OVER same_role AS rank_in_role,
        -- A ROWS frame gives the same first row as the default RANGE frame, which SQLite
        -- evaluates at about twice the cost.
        first_value(source_id) OVER (same_role ROWS UNBOUNDED PRECEDING) AS kept_source_id
    FROM opportunity_role_claim claim
    WINDOW same_role AS (
        PARTITION BY opportunityid, contactid, role, left_out_reason IS NULL
        ORDER BY priority, source_id
    )
)
SELECT
    opportunityid,
    contactid,
    role,
    is_primary,
    rule,
    source_id,
    CASE
        WHEN left_out_reason IS NULL AND rank_in_role > 1
            THEN 'same role already derived from ' || kept_source_id
        ELSE left_out_reason
    END AS left_out_reason
FROM ranked;
