-- rule: the Marketo sales persons to send (PRODUCT.md section 3, System user -> sales person):
-- every system user that an exported company, lead or opportunity names as its
-- externalSalesPersonId, disabled users too (the link still matters). Sent first, so that
-- Marketo knows them before any record points at them. key = externalSalesPersonId = systemuserid.
CREATE VIEW mkto_sales_person AS
WITH named AS (
    SELECT sales_person_id AS id FROM mkto_company WHERE skip_reason IS NULL
    UNION
    SELECT sales_person_id FROM mkto_lead WHERE skip_reason IS NULL
    UNION
    SELECT sales_person_id FROM mkto_opportunity WHERE skip_reason IS NULL
)
SELECT
    u.systemuserid AS key,
    u.systemuserid AS source_id,
    json_object(
        'externalSalesPersonId', u.systemuserid,
        'email', u.internalemailaddress,
        'firstName', u.firstname,
        'lastName', u.lastname,
        'title', u.title,
        'phone', u.address1_telephone1,
        'mobilePhone', u.mobilephone
    ) AS payload,
    NULL AS skip_reason
FROM named
JOIN systemuser u ON u.systemuserid = named.id;
