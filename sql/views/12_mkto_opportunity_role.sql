-- rule: the Marketo opportunity roles to send (PRODUCT.md section 3, Role -> opportunity role), one
-- per derived role whose contact has a lead. Marketo's key is opportunity + lead + role, so two
-- contacts folded into one lead holding the same role are one role (primary if either is). The
-- leadId is the Marketo id of the lead, known only once the lead is acknowledged, so push adds it.
-- key = json_array(externalOpportunityId, lead key, role); opportunityid is the role's
-- opportunity, also on rows that cannot be sent.
CREATE VIEW mkto_opportunity_role AS
WITH role AS (
    SELECT
        r.opportunityid,
        r.role,
        r.is_primary,
        r.source_id,
        r.lead_key,
        o.skip_reason AS opportunity_skip_reason
    FROM opportunity_contact_role r
    JOIN mkto_opportunity o ON o.key = r.opportunityid
)
-- One pass over the roles: a role without a lead key is a group of its own (its source_id), so
-- that it stays one row, as it cannot be sent.
SELECT
    CASE WHEN lead_key IS NOT NULL THEN json_array(opportunityid, lead_key, role) END AS key,
    min(source_id) AS source_id,
    lead_key,
    CASE WHEN lead_key IS NOT NULL THEN json_object(
        'externalOpportunityId', opportunityid,
        'role', role,
        'isPrimary', json(CASE WHEN max(is_primary) = 1 THEN 'true' ELSE 'false' END)
    ) END AS payload,
    CASE
        WHEN lead_key IS NULL THEN 'contact has no email, so it has no lead'
        WHEN opportunity_skip_reason IS NOT NULL THEN 'opportunity not sent: ' || opportunity_skip_reason
    END AS skip_reason,
    opportunityid
FROM role
GROUP BY opportunityid, lead_key, role, CASE WHEN lead_key IS NULL THEN source_id END;
