//! Query: by a searchable field (`filterType`, `filterValues`, `fields`, paging with
//! `nextPageToken`) or, as a JSON body, by compound dedupe keys.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::{Kind, Sim, State, envelope, failure};
use crate::sim::http::Response;

impl Sim {
    pub(super) fn query(
        &self,
        kind: Kind,
        params: &[(String, String)],
        json_body: Option<Value>,
        rng: u64,
    ) -> Response {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let batch_size = get("batchSize")
            .and_then(|b| b.parse::<usize>().ok())
            .unwrap_or(300)
            .clamp(1, 300);
        let offset = get("nextPageToken")
            .and_then(|t| {
                t.strip_prefix("sim-")
                    .and_then(|n| usize::from_str_radix(n, 16).ok())
            })
            .unwrap_or(0);
        let state = self.lock();
        let all = || -> Vec<&Map<String, Value>> {
            match kind {
                Kind::Lead => state.leads.values().collect(),
                Kind::Company => state.companies.values().collect(),
                Kind::Opportunity => state.opportunities.values().collect(),
                Kind::Role => state.roles.values().collect(),
                Kind::SalesPerson => state.sales_persons.values().collect(),
            }
        };
        let (filter_type, fields, matching): (String, Option<String>, Vec<&Map<String, Value>>) =
            if let Some(body) = json_body {
                // Compound-key query: {filterType: "dedupeFields", fields: [...], input: [{...}]}.
                let filter_type = body
                    .get("filterType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if filter_type != "dedupeFields" {
                    return failure(
                        rng,
                        "1003",
                        &format!("Invalid filterType '{filter_type}' for a JSON query"),
                    );
                }
                let inputs = body
                    .get("input")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let fields = body.get("fields").and_then(Value::as_array).map(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let matching = all()
                    .into_iter()
                    .filter(|record| {
                        inputs.iter().any(|input| {
                            kind.dedupe_fields()
                                .iter()
                                .all(|f| loose_eq(record.get(*f), input.get(*f)))
                        })
                    })
                    .collect();
                (filter_type, fields, matching)
            } else {
                let Some(filter_type) = get("filterType") else {
                    return failure(rng, "701", "filterType cannot be blank");
                };
                let Some(values) = get("filterValues") else {
                    return failure(rng, "701", "filterValues cannot be blank");
                };
                let field = match filter_type.as_str() {
                    "idField" => kind.id_field().to_string(),
                    "dedupeFields" if kind.dedupe_fields().len() == 1 => {
                        kind.dedupe_fields()[0].to_string()
                    }
                    other if kind.searchable().contains(&other) => other.to_string(),
                    other => return failure(rng, "1003", &format!("Invalid filterType '{other}'")),
                };
                let values: Vec<&str> = values
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                if values.len() > 300 {
                    return failure(rng, "1003", "Too many filterValues (at most 300)");
                }
                // One pass with the values in sets, where a comparison of every record with
                // every value took 0.3-0.5 s a query at 20k opportunities, under the lock that
                // every call takes: `recheck`'s queries waited on the simulator, not on the
                // latency they rehearse. Matches as `loose_eq` does for a wanted string.
                let lowered: HashSet<String> =
                    values.iter().map(|v| v.to_ascii_lowercase()).collect();
                let exact: HashSet<&str> = values.iter().copied().collect();
                let matches = |record: &Map<String, Value>| match record.get(&field) {
                    Some(Value::String(stored)) => lowered.contains(&stored.to_ascii_lowercase()),
                    Some(Value::Number(stored)) => exact.contains(stored.to_string().as_str()),
                    _ => false,
                };
                // Leads by id and opportunities and roles by marketoGUID are looked up rather
                // than scanned for (`recheck`'s queries); the others are scanned for.
                let matching = match state.indexed(kind, &field, &values) {
                    Some(found) => found.into_iter().filter(|r| matches(r)).collect(),
                    None => all().into_iter().filter(|r| matches(r)).collect(),
                };
                // Clients send a list of fields as one comma list or as repeated keys.
                let fields: Vec<&str> = params
                    .iter()
                    .filter(|(k, _)| k == "fields")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let fields = (!fields.is_empty()).then(|| fields.join(","));
                (filter_type, fields, matching)
            };
        let _ = filter_type;
        let default_fields: Vec<String> = match kind {
            Kind::Lead => [
                "id",
                "email",
                "updatedAt",
                "createdAt",
                "firstName",
                "lastName",
            ]
            .map(String::from)
            .to_vec(),
            _ => {
                let mut f = vec![kind.id_field().to_string()];
                f.extend(kind.dedupe_fields().iter().map(|s| s.to_string()));
                f.extend(["updatedAt".to_string(), "createdAt".to_string()]);
                f
            }
        };
        let fields: Vec<String> = fields
            .map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or(default_fields);
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(batch_size)
            .enumerate()
            .map(|(i, record)| {
                let mut out = Map::new();
                if kind != Kind::Lead {
                    out.insert("seq".into(), json!(offset + i));
                }
                for field in &fields {
                    if let Some(value) = record.get(field) {
                        out.insert(field.clone(), value.clone());
                    }
                }
                Value::Object(out)
            })
            .collect();
        let more = (offset + page.len() < matching.len())
            .then(|| format!("sim-{:x}", offset + page.len()));
        envelope(rng, page, more)
    }
}

/// Compares stored and requested values the way query filters do: strings case-insensitively,
/// numbers against their text.
fn loose_eq(stored: Option<&Value>, wanted: Option<&Value>) -> bool {
    match (stored, wanted) {
        (Some(Value::String(a)), Some(Value::String(b))) => a.eq_ignore_ascii_case(b),
        (Some(Value::Number(a)), Some(Value::String(b))) => a.to_string() == *b,
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

impl State {
    /// The records of `kind` whose `field` is one of `values`, each once, in the order of the
    /// values, when an index finds them: leads and companies by id, opportunities and roles by
    /// marketoGUID.
    /// `None` for any other field, to be scanned for.
    fn indexed(
        &self,
        kind: Kind,
        field: &str,
        values: &[&str],
    ) -> Option<Vec<&Map<String, Value>>> {
        let mut seen = HashSet::new();
        let values = values
            .iter()
            .map(|v| v.to_ascii_lowercase())
            .filter(|v| seen.insert(v.clone()));
        // A GUID entry may outlive its record: the key's record now may be another.
        let has_guid = |record: &Map<String, Value>, guid: &str| {
            record
                .get("marketoGUID")
                .and_then(Value::as_str)
                .is_some_and(|stored| stored.eq_ignore_ascii_case(guid))
        };
        Some(match (kind, field) {
            (Kind::Lead, "id") => values
                .filter_map(|v| v.parse::<i64>().ok())
                .filter_map(|id| self.leads.get(&id))
                .collect(),
            (Kind::Company, "id") => values
                .filter_map(|v| v.parse::<i64>().ok())
                .filter_map(|id| self.companies.get(self.company_key(id)?))
                .collect(),
            (Kind::Opportunity, "marketoGUID") => values
                .filter_map(|v| {
                    let record = self.opportunities.get(self.opportunity_guids.get(&v)?)?;
                    has_guid(record, &v).then_some(record)
                })
                .collect(),
            (Kind::Role, "marketoGUID") => values
                .filter_map(|v| {
                    let record = self.roles.get(self.role_guids.get(&v)?)?;
                    has_guid(record, &v).then_some(record)
                })
                .collect(),
            _ => return None,
        })
    }
}
