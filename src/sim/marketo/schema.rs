//! The object types and what their describes say: fields with their types and whether they
//! are updateable, id and dedupe fields, searchable fields; the describe endpoint; and the
//! check of a record's fields and values against them (1006, 1003).

use serde_json::{Map, Value, json};

use super::{Sim, envelope};
use crate::sim::http::Response;

/// The object types, with their describe metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Lead,
    Company,
    Opportunity,
    Role,
    SalesPerson,
}

impl Kind {
    pub(super) fn from_path(path: &str) -> Option<(Kind, &str)> {
        let rest = path.strip_prefix("/rest/v1/")?;
        for (prefix, kind) in [
            ("opportunities/roles", Kind::Role),
            ("opportunities", Kind::Opportunity),
            ("companies", Kind::Company),
            ("leads", Kind::Lead),
            ("salespersons", Kind::SalesPerson),
        ] {
            if let Some(tail) = rest.strip_prefix(prefix)
                && (tail.starts_with('.') || tail.starts_with('/'))
            {
                return Some((kind, tail));
            }
        }
        None
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Lead => "lead",
            Kind::Company => "company",
            Kind::Opportunity => "opportunity",
            Kind::Role => "opportunityRole",
            Kind::SalesPerson => "salesPerson",
        }
    }

    /// Whether an instance with Marketo's native CRM sync switches this API off (1018).
    pub(super) fn off_under_native_sync(self) -> bool {
        self != Kind::Lead
    }

    pub(super) fn id_field(self) -> &'static str {
        match self {
            Kind::Lead | Kind::Company | Kind::SalesPerson => "id",
            Kind::Opportunity | Kind::Role => "marketoGUID",
        }
    }

    pub(super) fn dedupe_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Lead => &["email"],
            Kind::Company => &["externalCompanyId"],
            Kind::Opportunity => &["externalOpportunityId"],
            Kind::Role => &["externalOpportunityId", "leadId", "role"],
            Kind::SalesPerson => &["externalSalesPersonId"],
        }
    }

    pub(super) fn searchable(self) -> &'static [&'static str] {
        match self {
            Kind::Lead => &["id", "email", "externalCompanyId"],
            Kind::Company => &["externalCompanyId", "id", "company"],
            Kind::Opportunity => &["externalOpportunityId", "marketoGUID", "externalCompanyId"],
            Kind::Role => &["marketoGUID", "leadId", "externalOpportunityId"],
            Kind::SalesPerson => &["externalSalesPersonId", "id", "email"],
        }
    }

    /// (name, dataType, updateable)
    pub(super) fn fields(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Kind::Lead => &[
                ("id", "integer", false),
                ("email", "email", true),
                ("firstName", "string", true),
                ("lastName", "string", true),
                ("title", "string", true),
                ("phone", "phone", true),
                ("company", "string", true),
                ("externalCompanyId", "string", true),
                ("externalSalesPersonId", "string", true),
                ("externalPersonId", "string", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::Company => &[
                ("id", "integer", false),
                ("externalCompanyId", "string", false),
                ("company", "string", true),
                ("website", "url", true),
                ("numberOfEmployees", "integer", true),
                ("annualRevenue", "currency", true),
                ("industry", "string", true),
                ("mainPhone", "phone", true),
                ("billingStreet", "string", true),
                ("billingCity", "string", true),
                ("billingState", "string", true),
                ("billingPostalCode", "string", true),
                ("billingCountry", "string", true),
                ("sicCode", "string", true),
                ("site", "string", true),
                ("externalSalesPersonId", "string", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::Opportunity => &[
                ("marketoGUID", "string", false),
                ("externalOpportunityId", "string", false),
                ("name", "string", true),
                ("description", "string", true),
                ("type", "string", true),
                ("stage", "string", true),
                ("amount", "currency", true),
                ("expectedRevenue", "currency", true),
                ("closeDate", "date", true),
                ("isClosed", "boolean", true),
                ("isWon", "boolean", true),
                ("probability", "integer", true),
                ("externalCompanyId", "string", true),
                ("externalSalesPersonId", "string", true),
                ("externalCreatedDate", "datetime", true),
                ("fiscalQuarter", "integer", true),
                ("fiscalYear", "integer", true),
                ("forecastCategory", "string", true),
                ("forecastCategoryName", "string", true),
                ("lastActivityDate", "date", true),
                ("leadSource", "string", true),
                ("nextStep", "string", true),
                ("quantity", "float", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::Role => &[
                ("marketoGUID", "string", false),
                ("externalOpportunityId", "string", false),
                ("leadId", "integer", false),
                ("role", "string", false),
                ("isPrimary", "boolean", true),
                ("externalCreatedDate", "datetime", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::SalesPerson => &[
                ("id", "integer", false),
                ("externalSalesPersonId", "string", false),
                ("email", "email", true),
                ("firstName", "string", true),
                ("lastName", "string", true),
                ("phone", "phone", true),
                ("mobilePhone", "phone", true),
                ("fax", "phone", true),
                ("title", "string", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
        }
    }
}

impl Sim {
    pub(super) fn describe(&self, kind: Kind, rng: u64) -> Response {
        let fields: Vec<Value> = kind
            .fields()
            .iter()
            .map(|(name, data_type, updateable)| json!({"name": name, "displayName": name, "dataType": data_type, "updateable": updateable}))
            .collect();
        if kind == Kind::Lead {
            let fields: Vec<Value> = kind
                .fields()
                .iter()
                .enumerate()
                .map(|(i, (name, data_type, updateable))| json!({"id": i + 1, "displayName": name, "dataType": data_type, "rest": {"name": name, "readOnly": !updateable}}))
                .collect();
            return envelope(rng, fields, None);
        }
        let searchable: Vec<Value> = kind.searchable().iter().map(|f| json!([f])).collect();
        let mut searchable_fields = vec![json!(kind.dedupe_fields())];
        searchable_fields.extend(searchable);
        envelope(
            rng,
            vec![json!({
                "name": kind.name(),
                "displayName": kind.name(),
                "createdAt": "2024-01-01T00:00:00Z",
                "updatedAt": "2024-01-01T00:00:00Z",
                "idField": kind.id_field(),
                "dedupeFields": kind.dedupe_fields(),
                "searchableFields": searchable_fields,
                "fields": fields,
            })],
            None,
        )
    }

    /// Checks field names and value types against the describe; `Err((code, message))` skips.
    pub(super) fn validate(
        kind: Kind,
        record: &Map<String, Value>,
        creating: bool,
    ) -> Result<(), (String, String)> {
        for (name, value) in record {
            let Some((_, data_type, updateable)) = kind.fields().iter().find(|(f, _, _)| f == name)
            else {
                return Err(("1006".into(), format!("Field '{name}' not found")));
            };
            if !updateable
                && !creating
                && !kind.dedupe_fields().contains(&name.as_str())
                && *name != kind.id_field()
            {
                return Err(("1003".into(), format!("Field '{name}' is not updateable")));
            }
            let ok = match (*data_type, value) {
                (_, Value::Null) => true,
                ("string" | "email" | "url" | "phone", Value::String(_)) => true,
                ("integer", Value::Number(n)) => n.is_i64(),
                ("integer", Value::String(s)) => s.parse::<i64>().is_ok(),
                ("currency" | "float", Value::Number(_)) => true,
                ("currency" | "float", Value::String(s)) => s.parse::<f64>().is_ok(),
                ("boolean", Value::Bool(_)) => true,
                ("date", Value::String(s)) => {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                }
                ("datetime", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                _ => false,
            };
            if !ok {
                let shown = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return Err((
                    "1003".into(),
                    format!("Invalid value for field '{name}' and value '{shown}'"),
                ));
            }
        }
        Ok(())
    }
}
