//! Delete of every object, by dedupe fields or by id; deleting an opportunity or a lead takes
//! its roles with it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::{Kind, Sim, envelope, key_by_guid, role_key, skipped};
use crate::sim::http::Response;

impl Sim {
    pub(super) fn delete(&self, kind: Kind, body: &Value, input: &[Value], rng: u64) -> Response {
        let by_id = body.get("deleteBy").and_then(Value::as_str) == Some("idField");
        let mut state = self.lock();
        let mut results = Vec::with_capacity(input.len());
        // The leads deleted, whose roles go in one pass over every role once the call's leads
        // are gone, rather than one pass per lead (2.5M roles at 1M opportunities).
        let mut leads_deleted = BTreeSet::new();
        // By id, each record found through one map of the object's ids made for the call,
        // rather than a scan of every record per record named.
        let mut keys_by_id: Option<BTreeMap<String, String>> = None;
        for (seq, item) in input.iter().enumerate() {
            let seq_field = (kind != Kind::Lead).then_some(seq);
            let record = item.as_object().cloned().unwrap_or_default();
            let removed: Option<Value> = match kind {
                Kind::Lead => {
                    let id = record.get("id").and_then(Value::as_i64).unwrap_or_default();
                    state.unindex_lead(id);
                    let removed = state.leads.remove(&id).map(|_| json!(id));
                    if removed.is_some() {
                        leads_deleted.insert(id);
                    }
                    removed
                }
                Kind::SalesPerson => {
                    let records = &mut state.sales_persons;
                    remove_keyed(records, &mut keys_by_id, kind, &record, by_id).map(|(_, id)| id)
                }
                Kind::Company if by_id => {
                    // By the id index, not a map of every company made for the call.
                    let id = record.get("id").and_then(Value::as_i64);
                    let key = id.and_then(|id| state.company_key(id).cloned());
                    key.and_then(|key| state.companies.remove(&key))
                        .map(|stored| stored.get("id").cloned().unwrap_or(Value::Null))
                }
                Kind::Company => {
                    let records = &mut state.companies;
                    remove_keyed(records, &mut keys_by_id, kind, &record, false).map(|(_, id)| id)
                }
                Kind::Opportunity => {
                    let removed = if by_id {
                        // By its GUID's index, not a scan of every opportunity per record.
                        let key = record.get("marketoGUID").and_then(|guid| {
                            key_by_guid(&state.opportunity_guids, &state.opportunities, guid)
                        });
                        key.and_then(|key| {
                            let stored = state.opportunities.remove(&key)?;
                            Some((key, stored.get("marketoGUID").cloned().unwrap_or_default()))
                        })
                    } else {
                        remove_keyed(&mut state.opportunities, &mut None, kind, &record, false)
                    };
                    if let Some((key, _)) = &removed {
                        // Its roles are the keys that start with it: a range, not a scan of
                        // every role (2.5M at 1M opportunities) per opportunity deleted.
                        let on_it: Vec<(String, i64, String)> = state
                            .roles
                            .range((key.clone(), i64::MIN, String::new())..)
                            .take_while(|((opp, _, _), _)| opp == key)
                            .map(|(role, _)| role.clone())
                            .collect();
                        for role in on_it {
                            state.roles.remove(&role);
                        }
                    }
                    removed.map(|(_, id)| id)
                }
                Kind::Role => {
                    let key = if by_id {
                        record
                            .get("marketoGUID")
                            .and_then(|guid| key_by_guid(&state.role_guids, &state.roles, guid))
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
        if !leads_deleted.is_empty() {
            state
                .roles
                .retain(|(_, lead, _), _| !leads_deleted.contains(lead));
        }
        envelope(rng, results, None)
    }
}

/// Removes the record of an object keyed by one dedupe field that `record` names, by its id
/// (`deleteBy: idField`) or by its dedupe field; returns the removed key and id. By id, the
/// record is found in `keys_by_id`, made from `records` at the call's first delete by id (the
/// id's JSON text to the key: the ids are numbers, and equal numbers have the same text), and
/// kept as records go, since an id is never given again.
fn remove_keyed(
    records: &mut BTreeMap<String, Map<String, Value>>,
    keys_by_id: &mut Option<BTreeMap<String, String>>,
    kind: Kind,
    record: &Map<String, Value>,
    by_id: bool,
) -> Option<(String, Value)> {
    let id_field = kind.id_field();
    let key = if by_id {
        let keys = keys_by_id.get_or_insert_with(|| {
            records
                .iter()
                .filter_map(|(key, stored)| Some((stored.get(id_field)?.to_string(), key.clone())))
                .collect()
        });
        keys.remove(&record.get(id_field)?.to_string())
    } else {
        record
            .get(kind.dedupe_fields()[0])
            .and_then(Value::as_str)
            .map(str::to_string)
    }?;
    let removed = records.remove(&key)?;
    Some((key, removed.get(id_field).cloned().unwrap_or(Value::Null)))
}
