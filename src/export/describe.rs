//! Checks the Marketo instance before anything is sent: each object push will write is
//! described once per run, and every field oppsync would send must exist there and be
//! updateable. A missing field (a mapping to a field the instance lacks, `externalPersonId` on
//! an instance without Sales Insight for non-native integrations) or a read-only one stops the
//! push with exit 2, naming the field and the object, before any record goes: otherwise every
//! record would come back skipped with 1006, one call at a time.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::client::{CallLog, MarketoClient};
use crate::config::MappingConfig;
use crate::exit::usage;
use crate::object::Object;
use crate::plan::Plan;

/// A field as a describe lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: String,
    pub updateable: bool,
}

/// Describes every object the plan creates or updates records of and checks the fields those
/// records carry. Objects with nothing to send are not described, so an idle push makes no call.
pub(crate) fn check(
    client: &MarketoClient,
    plan: &Plan,
    mapping: &MappingConfig,
    max_in_flight: usize,
    calls: &mut Vec<CallLog>,
) -> Result<()> {
    let wanted: Vec<(Object, BTreeSet<String>)> = Object::ALL
        .into_iter()
        .map(|object| (object, fields_sent(plan, object)))
        .filter(|(_, sent)| !sent.is_empty())
        .collect();
    // The describes are independent: they go `max_in_flight` at a time, then are judged in
    // send order.
    let mut exchanges = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(max_in_flight.max(1)) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(object, _)| scope.spawn(move || client.get(object.describe_path())))
                .collect();
            exchanges.extend(handles.into_iter().map(|h| h.join()));
        });
    }
    let mut first_error = None;
    for ((object, sent), exchange) in wanted.iter().zip(exchanges) {
        let Ok(exchange) = exchange else {
            first_error.get_or_insert_with(|| {
                anyhow!("describing {} failed unexpectedly", object.plural())
            });
            continue;
        };
        calls.extend(exchange.calls);
        if first_error.is_some() {
            continue;
        }
        let judged = exchange.result.and_then(|answer| {
            let described = fields(*object, &answer).ok_or_else(|| {
                anyhow!(
                    "cannot read Marketo's describe of {} ({}): no field list",
                    object.plural(),
                    object.describe_path()
                )
            })?;
            compare(*object, sent, &described, mapping.of(*object))
        });
        if let Err(err) = judged {
            first_error = Some(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The fields the plan's records of `object` carry (a role's `leadId` is added by push).
fn fields_sent(plan: &Plan, object: Object) -> BTreeSet<String> {
    let mut fields = plan.fields(object);
    if object == Object::OpportunityRole && !fields.is_empty() {
        fields.insert("leadId".to_string());
    }
    fields
}

/// The fields of a describe answer: leads list `{rest: {name, readOnly}}`, the other objects
/// `{fields: [{name, updateable}]}` in their one result.
pub(crate) fn fields(object: Object, answer: &Value) -> Option<BTreeMap<String, Field>> {
    let result = answer.get("result")?.as_array()?;
    let mut out = BTreeMap::new();
    if object == Object::Lead {
        for field in result {
            let rest = field.get("rest")?;
            let name = rest.get("name")?.as_str()?.to_string();
            let read_only = rest
                .get("readOnly")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            out.insert(
                name.clone(),
                Field {
                    name,
                    updateable: !read_only,
                },
            );
        }
    } else {
        for field in result.first()?.get("fields")?.as_array()? {
            let name = field.get("name")?.as_str()?.to_string();
            let updateable = field
                .get("updateable")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            out.insert(name.clone(), Field { name, updateable });
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Refuses the first field that the instance lacks, or that it will not update (the dedupe
/// fields excepted: Marketo sets them on create and finds records by them).
fn compare(
    object: Object,
    sent: &BTreeSet<String>,
    described: &BTreeMap<String, Field>,
    mapped: &BTreeMap<String, String>,
) -> Result<()> {
    for name in sent {
        let what = if mapped.contains_key(name) {
            format!(
                "remove it from [mapping.{}]",
                object.mapping_name().unwrap_or("")
            )
        } else if name.starts_with("external") {
            "oppsync sends it by default; the instance needs Marketo Sales Insight for non-native Dynamics integrations, which adds the external* fields".to_string()
        } else {
            "oppsync sends it by default; check the instance's field set".to_string()
        };
        match described.get(name) {
            None => {
                return Err(usage(format!(
                    "Marketo's {} have no field {name} ({}): {what}. Nothing was sent",
                    object.plural(),
                    object.describe_path()
                )));
            }
            Some(field)
                if !field.updateable && !object.dedupe_fields().contains(&name.as_str()) =>
            {
                return Err(usage(format!(
                    "Marketo's {} field {name} is not updateable: {what}. Nothing was sent",
                    object.plural()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn described(object: Object, answer: Value) -> BTreeMap<String, Field> {
        fields(object, &answer).unwrap()
    }

    #[test]
    fn lead_and_object_describes_are_both_read() {
        let leads = described(
            Object::Lead,
            json!({"result": [
                {"id": 1, "displayName": "Email", "dataType": "email", "rest": {"name": "email", "readOnly": false}},
                {"id": 2, "displayName": "Id", "dataType": "integer", "rest": {"name": "id", "readOnly": true}}
            ]}),
        );
        assert!(leads["email"].updateable);
        assert!(!leads["id"].updateable);
        let opportunities = described(
            Object::Opportunity,
            json!({"result": [{"name": "opportunity", "fields": [
                {"name": "externalOpportunityId", "dataType": "string", "updateable": false},
                {"name": "amount", "dataType": "currency", "updateable": true}
            ]}]}),
        );
        assert_eq!(opportunities.len(), 2);
        assert_eq!(fields(Object::Company, &json!({"result": []})), None);
        assert_eq!(fields(Object::Company, &json!({"success": true})), None);
    }

    #[test]
    fn a_missing_or_read_only_field_is_refused_by_name_but_dedupe_fields_pass() {
        let described = described(
            Object::Opportunity,
            json!({"result": [{"fields": [
                {"name": "externalOpportunityId", "updateable": false},
                {"name": "name", "updateable": true},
                {"name": "createdAt", "updateable": false}
            ]}]}),
        );
        let sent = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let none = BTreeMap::new();
        let mapped =
            BTreeMap::from([("expectedRevenue".to_string(), "estimatedvalue".to_string())]);
        compare(
            Object::Opportunity,
            &sent(&["externalOpportunityId", "name"]),
            &described,
            &none,
        )
        .unwrap();
        let err = compare(
            Object::Opportunity,
            &sent(&["name", "expectedRevenue"]),
            &described,
            &mapped,
        )
        .unwrap_err();
        assert!(crate::exit::is_usage(&err));
        let message = format!("{err:#}");
        assert!(message.contains("no field expectedRevenue"), "{message}");
        assert!(
            message.contains("remove it from [mapping.opportunity]"),
            "{message}"
        );
        let err = compare(
            Object::Opportunity,
            &sent(&["externalSalesPersonId"]),
            &described,
            &none,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("Sales Insight"), "{err:#}");
        let err = compare(
            Object::Opportunity,
            &sent(&["createdAt"]),
            &described,
            &none,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("createdAt is not updateable"),
            "{err:#}"
        );
    }
}
