//! The Marketo objects oppsync sends, in one vocabulary: each object's name (as stored in
//! `mkto_ack` and `push_outcome`), its export view, its REST paths, the field holding Marketo's
//! id in results, its dedupe fields, the Dynamics records it is made from, the `[mapping.*]`
//! table that extends it, and its place in the send order. Everything else (config, pull,
//! plan, push, explain) asks this module instead of spelling objects as strings.

use serde::Serialize;

/// A Marketo object, in the order push sends them (Adobe's recipe for non-native integrations:
/// sales persons, then companies, leads, opportunities and roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Object {
    SalesPerson,
    Company,
    Lead,
    Opportunity,
    OpportunityRole,
}

/// The Dynamics records an object is made from, for `[mapping.*]` columns read from `raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Source {
    pub entity_set: &'static str,
    pub table: &'static str,
    pub key: &'static str,
}

impl Object {
    /// Every object, in send order.
    pub(crate) const ALL: [Object; 5] = [
        Object::SalesPerson,
        Object::Company,
        Object::Lead,
        Object::Opportunity,
        Object::OpportunityRole,
    ];

    /// The name used in `mkto_ack.object`, `push_outcome.object` and `--json` output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Object::SalesPerson => "sales_person",
            Object::Company => "company",
            Object::Lead => "lead",
            Object::Opportunity => "opportunity",
            Object::OpportunityRole => "opportunity_role",
        }
    }

    /// The plural used in messages.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Object::SalesPerson => "sales persons",
            Object::Company => "companies",
            Object::Lead => "leads",
            Object::Opportunity => "opportunities",
            Object::OpportunityRole => "roles",
        }
    }

    /// The export view that holds the rows to send (`sql/views/`).
    pub(crate) fn view(self) -> &'static str {
        match self {
            Object::SalesPerson => "mkto_sales_person",
            Object::Company => "mkto_company",
            Object::Lead => "mkto_lead",
            Object::Opportunity => "mkto_opportunity",
            Object::OpportunityRole => "mkto_opportunity_role",
        }
    }

    /// The REST path (under `/rest`) that creates or updates records.
    pub(crate) fn sync_path(self) -> &'static str {
        match self {
            Object::SalesPerson => "/v1/salespersons.json",
            Object::Company => "/v1/companies.json",
            Object::Lead => "/v1/leads.json",
            Object::Opportunity => "/v1/opportunities.json",
            Object::OpportunityRole => "/v1/opportunities/roles.json",
        }
    }

    /// The REST path that deletes records.
    pub(crate) fn delete_path(self) -> &'static str {
        match self {
            Object::SalesPerson => "/v1/salespersons/delete.json",
            Object::Company => "/v1/companies/delete.json",
            Object::Lead => "/v1/leads/delete.json",
            Object::Opportunity => "/v1/opportunities/delete.json",
            Object::OpportunityRole => "/v1/opportunities/roles/delete.json",
        }
    }

    /// The field holding Marketo's id in a result: an integer `id` for sales persons,
    /// companies and leads, a `marketoGUID` string for opportunities and roles.
    pub(crate) fn id_field(self) -> &'static str {
        match self {
            Object::SalesPerson | Object::Company | Object::Lead => "id",
            Object::Opportunity | Object::OpportunityRole => "marketoGUID",
        }
    }

    /// Whether Marketo's id is an integer (else a GUID string).
    pub(crate) fn has_integer_id(self) -> bool {
        self.id_field() == "id"
    }

    /// The fields Marketo finds a record by; oppsync sets them itself and no mapping may
    /// replace them.
    pub(crate) fn dedupe_fields(self) -> &'static [&'static str] {
        match self {
            Object::SalesPerson => &["externalSalesPersonId"],
            Object::Company => &["externalCompanyId"],
            Object::Lead => &["email"],
            Object::Opportunity => &["externalOpportunityId"],
            Object::OpportunityRole => &["externalOpportunityId", "leadId", "role"],
        }
    }

    /// Whether results carry `seq` (Sync Leads' do not: they come back by position).
    pub(crate) fn results_carry_seq(self) -> bool {
        self != Object::Lead
    }

    /// The Dynamics records the object is made from, when it is made from one table.
    pub(crate) fn source(self) -> Option<Source> {
        match self {
            Object::SalesPerson => Some(Source {
                entity_set: "systemusers",
                table: "systemuser",
                key: "systemuserid",
            }),
            Object::Company => Some(Source {
                entity_set: "accounts",
                table: "account",
                key: "accountid",
            }),
            Object::Lead => Some(Source {
                entity_set: "contacts",
                table: "contact",
                key: "contactid",
            }),
            Object::Opportunity => Some(Source {
                entity_set: "opportunities",
                table: "opportunity",
                key: "opportunityid",
            }),
            Object::OpportunityRole => None,
        }
    }

    /// The `[mapping.<name>]` table that adds fields to this object, if any.
    pub(crate) fn mapping_name(self) -> Option<&'static str> {
        match self {
            Object::Company | Object::Lead | Object::Opportunity => Some(self.name()),
            Object::SalesPerson | Object::OpportunityRole => None,
        }
    }

    /// The REST path (under `/rest`) that describes the object's fields.
    pub(crate) fn describe_path(self) -> &'static str {
        match self {
            Object::SalesPerson => "/v1/salespersons/describe.json",
            Object::Company => "/v1/companies/describe.json",
            Object::Lead => "/v1/leads/describe.json",
            Object::Opportunity => "/v1/opportunities/describe.json",
            Object::OpportunityRole => "/v1/opportunities/roles/describe.json",
        }
    }

    /// The object named `name` (`Object::name`), as tables store it.
    pub(crate) fn from_name(name: &str) -> Option<Object> {
        Object::ALL.into_iter().find(|o| o.name() == name)
    }

    /// The object whose export view is `view`; `None` for a rule view.
    pub(crate) fn from_view(view: &str) -> Option<Object> {
        Object::ALL.into_iter().find(|o| o.view() == view)
    }

    /// The object whose records come from `entity_set`.
    pub(crate) fn from_entity_set(entity_set: &str) -> Option<Object> {
        Object::ALL
            .into_iter()
            .find(|o| o.source().is_some_and(|s| s.entity_set == entity_set))
    }
}

/// The key of an opportunity role, as the export view builds it
/// (`json_array(opportunityid, lead key, role)`): Marketo finds a role by opportunity, lead
/// and role name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleKey {
    pub opportunity: String,
    /// The lead's key: its lower-cased email.
    pub lead: String,
    pub role: String,
}

impl RoleKey {
    /// Reads a stored role key; `None` when it is not a three-string JSON array.
    pub(crate) fn parse(key: &str) -> Option<RoleKey> {
        let [opportunity, lead, role]: [String; 3] = serde_json::from_str(key).ok()?;
        Some(RoleKey {
            opportunity,
            lead,
            role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_has_distinct_names_views_and_paths() {
        let mut seen = std::collections::BTreeSet::new();
        for object in Object::ALL {
            for word in [
                object.name(),
                object.plural(),
                object.view(),
                object.sync_path(),
                object.delete_path(),
                object.describe_path(),
            ] {
                assert!(seen.insert(word), "{word} is used twice");
            }
            assert!(!object.dedupe_fields().is_empty());
        }
        assert!(
            Object::ALL.windows(2).all(|w| w[0] < w[1]),
            "ALL is in send order"
        );
    }

    #[test]
    fn objects_are_found_by_entity_set_and_only_some_have_mappings() {
        assert_eq!(Object::from_entity_set("contacts"), Some(Object::Lead));
        assert_eq!(Object::from_entity_set("connections"), None);
        assert_eq!(Object::OpportunityRole.mapping_name(), None);
        assert_eq!(Object::SalesPerson.mapping_name(), None);
        assert_eq!(
            Object::from_entity_set("systemusers"),
            Some(Object::SalesPerson)
        );
        assert_eq!(Object::Company.mapping_name(), Some("company"));
    }

    #[test]
    fn role_keys_parse_from_their_json_array() {
        let key = RoleKey::parse(r#"["opp","ana@example.com","Customer"]"#).unwrap();
        assert_eq!(
            (
                key.opportunity.as_str(),
                key.lead.as_str(),
                key.role.as_str()
            ),
            ("opp", "ana@example.com", "Customer")
        );
        assert_eq!(RoleKey::parse(r#"["opp","ana@example.com"]"#), None);
        assert_eq!(RoleKey::parse("opp"), None);
    }
}
