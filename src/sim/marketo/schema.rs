//! The object types and what their describes say: fields with their types and whether they
//! are updateable, id and dedupe fields, searchable fields; the describe endpoint; and the
//! check of a record's fields and values against them (1006, 1003).

use serde_json::{Map, Value, json};

use super::{Sim, State, envelope};
use crate::sim::http::{Request, Response};

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

    const ALL: [Kind; 5] = [
        Kind::Lead,
        Kind::Company,
        Kind::Opportunity,
        Kind::Role,
        Kind::SalesPerson,
    ];

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

/// The fields of `kind` the instance has now: its own, less those deleted since.
fn present(state: &State, kind: Kind) -> Vec<(&'static str, &'static str, bool)> {
    kind.fields()
        .iter()
        .filter(|(name, _, _)| {
            !state
                .removed_fields
                .contains(&(kind.name(), (*name).to_string()))
        })
        .copied()
        .collect()
}

/// `POST /sim/fields`: `{"object": "opportunity", "remove": ["nextStep"], "restore": [...]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldChange {
    object: String,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    restore: Vec<String>,
}

impl Sim {
    /// Deletes fields from an object, or restores them, as an administrator can; answers with
    /// every field deleted so far. The id and dedupe fields cannot be deleted.
    pub(super) fn change_fields(&self, req: &Request) -> Response {
        let change: FieldChange = match serde_json::from_slice(&req.body) {
            Ok(change) => change,
            Err(err) => return Response::json(400, &json!({"error": err.to_string()})),
        };
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == change.object) else {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            return Response::json(
                400,
                &json!({"error": format!("unknown object {}; one of {names:?}", change.object)}),
            );
        };
        for name in change.remove.iter().chain(&change.restore) {
            if !kind.fields().iter().any(|(f, _, _)| f == name) {
                return Response::json(
                    400,
                    &json!({"error": format!("{} has no field {name}", kind.name())}),
                );
            }
            if *name == kind.id_field() || kind.dedupe_fields().contains(&name.as_str()) {
                return Response::json(
                    400,
                    &json!({"error": format!("{name} is {}'s id or dedupe field, which cannot be deleted", kind.name())}),
                );
            }
        }
        let mut state = self.lock();
        for name in change.remove {
            state.removed_fields.insert((kind.name(), name));
        }
        for name in change.restore {
            state.removed_fields.remove(&(kind.name(), name));
        }
        let removed: Vec<String> = state
            .removed_fields
            .iter()
            .map(|(object, name)| format!("{object}.{name}"))
            .collect();
        Response::json(200, &json!({"removed": removed}))
    }

    pub(super) fn describe(&self, kind: Kind, rng: u64) -> Response {
        let fields = present(&self.lock(), kind);
        let described: Vec<Value> = fields
            .iter()
            .map(|(name, data_type, updateable)| json!({"name": name, "displayName": name, "dataType": data_type, "updateable": updateable}))
            .collect();
        if kind == Kind::Lead {
            let fields: Vec<Value> = fields
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
                "fields": described,
            })],
            None,
        )
    }

    /// Checks field names and value types against the describe; `Err((code, message))` skips.
    pub(super) fn validate(
        state: &State,
        kind: Kind,
        record: &Map<String, Value>,
        creating: bool,
    ) -> Result<(), (String, String)> {
        let fields = present(state, kind);
        for (name, value) in record {
            let Some((_, data_type, updateable)) = fields.iter().find(|(f, _, _)| f == name) else {
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
