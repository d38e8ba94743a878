-- rule: each owner of a staged opportunity, account or contact, and the Marketo sales person that
-- stands for it (PRODUCT.md section 3, "Owners and the non-native integration recipe"). A system
-- user that is staged and live is its own sales person (externalSalesPersonId = systemuserid):
-- 'systemuser', also when the owner lookup carries no annotation. A team ('team'), or a user
-- that is not staged or is deleted ('user_not_staged'), gives no sales person: Marketo would
-- refuse an unknown externalSalesPersonId with 718. Records without an owner have no row here.
CREATE VIEW owner_sales_person AS
WITH owner AS (
    SELECT ownerid, ownerid_type FROM opportunity WHERE ownerid IS NOT NULL
    UNION
    SELECT ownerid, ownerid_type FROM account WHERE ownerid IS NOT NULL
    UNION
    SELECT ownerid, ownerid_type FROM contact WHERE ownerid IS NOT NULL
)
SELECT
    o.ownerid,
    o.ownerid_type AS owner_type,
    u.fullname AS owner_name,
    CASE
        WHEN o.ownerid_type = 'team' THEN NULL
        WHEN u.systemuserid IS NOT NULL AND u.deleted_run IS NULL THEN u.systemuserid
    END AS sales_person_id,
    CASE
        WHEN o.ownerid_type = 'team' THEN 'team'
        WHEN u.systemuserid IS NULL OR u.deleted_run IS NOT NULL THEN 'user_not_staged'
        ELSE 'systemuser'
    END AS rule
FROM owner o
LEFT JOIN systemuser u ON u.systemuserid = o.ownerid;
