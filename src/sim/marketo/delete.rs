//! Delete of every object, by dedupe fields or by id; deleting an opportunity or a lead takes
//! its roles with it.

use serde_json::{Value, json};

use super::{Kind, Sim, envelope, role_key, skipped};
use crate::sim::http::Response;

impl Sim {
    pub(super) fn delete(&self, kind: Kind, body: &Value, input: &[Value], rng: u64) -> Response {
        let by_id = body.get("deleteBy").and_then(Value::as_str) == Some("idField");
        let mut state = self.lock();
        let mut results = Vec::with_capacity(input.len());
        for (seq, item) in input.iter().enumerate() {
            let seq_field = (kind != Kind::Lead).then_some(seq);
            let record = item.as_object().cloned().unwrap_or_default();
            let removed: Option<Value> = match kind {
                Kind::Lead => {
                    let id = record.get("id").and_then(Value::as_i64).unwrap_or_default();
                    state.unindex_lead(id);
                    let removed = state.leads.remove(&id).map(|_| json!(id));
                    state.roles.retain(|(_, lead, _), _| *lead != id);
                    removed
                }
                Kind::SalesPerson => {
                    let key = if by_id {
                        let id = record.get("id").cloned();
                        state
                            .sales_persons
                            .iter()
                            .find(|(_, p)| p.get("id") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        record
                            .get("externalSalesPersonId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    key.and_then(|k| state.sales_persons.remove(&k))
                        .and_then(|p| p.get("id").cloned())
                }
                Kind::Company => {
                    let key = if by_id {
                        let id = record.get("id").cloned();
                        state
                            .companies
                            .iter()
                            .find(|(_, c)| c.get("id") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        record
                            .get("externalCompanyId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    key.and_then(|k| state.companies.remove(&k))
                        .and_then(|c| c.get("id").cloned())
                }
                Kind::Opportunity => {
                    let key = if by_id {
                        let id = record.get("marketoGUID").cloned();
                        state
                            .opportunities
                            .iter()
                            .find(|(_, o)| o.get("marketoGUID") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        record
                            .get("externalOpportunityId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    let removed = key.as_ref().and_then(|k| state.opportunities.remove(k));
                    if let Some(key) = key.filter(|_| removed.is_some()) {
                        state.roles.retain(|(opp, _, _), _| *opp != key);
                    }
                    removed.and_then(|o| o.get("marketoGUID").cloned())
                }
                Kind::Role => {
                    let key = if by_id {
                        let id = record.get("marketoGUID").cloned();
                        state
                            .roles
                            .iter()
                            .find(|(_, r)| r.get("marketoGUID") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        let values: Vec<Value> = kind
                            .dedupe_fields()
                            .iter()
                            .map(|f| record.get(*f).cloned().unwrap_or(Value::Null))
                            .collect();
                        Some(role_key(&values))
                    };
                    key.and_then(|k| state.roles.remove(&k))
                        .and_then(|r| r.get("marketoGUID").cloned())
                }
            };
            results.push(match removed {
                Some(id) => {
                    let mut result = json!({"status": "deleted", kind.id_field(): id});
                    if let Some(seq) = seq_field {
                        result["seq"] = json!(seq);
                    }
                    result
                }
                None if kind == Kind::Lead => skipped(None, "1004", "Lead not found"),
                None => skipped(seq_field, "1013", "Object not found"),
            });
        }
        envelope(rng, results, None)
    }
}
