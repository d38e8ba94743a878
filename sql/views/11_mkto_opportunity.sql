-- rule: the Marketo opportunities to send (PRODUCT.md section 3, Opportunity -> opportunity), one
-- per staged, in-scope opportunity. amount is actualvalue when won and present, else
-- estimatedvalue, both in the org's base currency (the _base columns) unless `[export] currency
-- = "transaction"`: Marketo holds one currency; externalSalesPersonId is the owner's sales person; closeDate is actualclosedate when closed and present, else estimatedclosedate;
-- stage is stepname, else the state label. externalCompanyId is the derived account only when it
-- is sent as a company (empty for accounts filtered out, deleted or not staged). A null source
-- field is sent as null. Marketo requires a name: an opportunity without one is skipped.
-- key = externalOpportunityId = opportunityid.
CREATE VIEW mkto_opportunity AS
SELECT
    o.opportunityid AS key,
    o.opportunityid AS source_id,
    CASE WHEN nullif(trim(o.name), '') IS NOT NULL THEN json_object(
        'externalOpportunityId', o.opportunityid,
        'name', o.name,
        'description', o.description,
        'amount', CASE
            WHEN coalesce((SELECT value FROM rule_setting WHERE name = 'export_currency'), 'base') = 'transaction'
            THEN CASE WHEN o.statecode = 1 AND o.actualvalue IS NOT NULL THEN o.actualvalue ELSE o.estimatedvalue END
            ELSE CASE WHEN o.statecode = 1 AND o.actualvalue_base IS NOT NULL THEN o.actualvalue_base ELSE o.estimatedvalue_base END
        END,
        'closeDate', CASE
            WHEN o.statecode IN (1, 2) AND o.actualclosedate IS NOT NULL THEN o.actualclosedate
            ELSE o.estimatedclosedate
        END,
        'stage', coalesce(o.stepname, CASE o.statecode WHEN 0 THEN 'Open' WHEN 1 THEN 'Won' WHEN 2 THEN 'Lost' END),
        'isClosed', json(CASE WHEN o.statecode IS NULL THEN NULL WHEN o.statecode <> 0 THEN 'true' ELSE 'false' END),
        'isWon', json(CASE WHEN o.statecode IS NULL THEN NULL WHEN o.statecode = 1 THEN 'true' ELSE 'false' END),
        'probability', o.closeprobability,
        'externalCompanyId', company.key,
        'externalCreatedDate', o.createdon,
        'externalSalesPersonId', osp.sales_person_id
    ) END AS payload,
    CASE WHEN nullif(trim(o.name), '') IS NULL THEN 'opportunity has no name (Marketo requires one)' END AS skip_reason,
    osp.sales_person_id
FROM opportunity_account oa
JOIN opportunity o ON o.opportunityid = oa.opportunityid
LEFT JOIN mkto_company company ON company.key = oa.accountid AND company.skip_reason IS NULL
LEFT JOIN owner_sales_person osp ON osp.ownerid = o.ownerid AND osp.owner_type IS o.ownerid_type;
