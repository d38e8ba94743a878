-- rule: the account of each staged, in-scope opportunity (PRODUCT.md section 2). Customer is an
-- account (also when both form fields are set, since Dynamics then stores the account):
-- 'customer_account'. Customer is a contact: the contact's account ('customer_contact_account'), or
-- none ('customer_contact_no_account', also when the contact is not staged). No customer, or one
-- whose type cannot be resolved: 'no_customer'. An account out of scope still appears here; the
-- export sends such opportunities with an empty externalCompanyId.
CREATE VIEW opportunity_account AS
SELECT
    oc.opportunityid,
    CASE oc.customer_type
        WHEN 'account' THEN oc.customer_id
        WHEN 'contact' THEN ca.accountid
    END AS accountid,
    CASE
        WHEN oc.customer_type = 'account' THEN 'customer_account'
        WHEN oc.customer_type = 'contact' AND ca.accountid IS NOT NULL THEN 'customer_contact_account'
        WHEN oc.customer_type = 'contact' THEN 'customer_contact_no_account'
        ELSE 'no_customer'
    END AS rule
FROM opportunity_customer oc
LEFT JOIN contact_account ca
    ON oc.customer_type = 'contact' AND ca.contactid = oc.customer_id;
