//! Checks the Marketo instance before anything is sent: each object push will write is
//! described, and every field oppsync would send must exist there and be updateable. A missing
//! field (a mapping to a field the instance lacks, `externalPersonId` on an instance without
//! Sales Insight for non-native integrations) or a read-only one stops the push with exit 2,
//! naming the field and the object, before any record goes: otherwise every record would come
//! back skipped with 1006, one call at a time.
//!
//! Describes are kept (table `marketo_describe`, per instance and API user) and trusted for
//! `[marketo] describe_max_age_hours` (default 24; Adobe: cache describe results for a day or
//! more), so that a push every few minutes does not spend up to five calls of the daily quota
//! on them. A stored describe only ever lets fields pass: one that lacks a field to send, or
//! says it is not updateable, is read again before anything is refused. A field deleted in
//! Marketo since shows as records skipped with 1006, which forgets the object's describe
//! (`forget`) and stops a push that trusted it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow};
use rusqlite::{Connection, params};
use serde_json::Value;

use super::client::{CallLog, MarketoClient};
use crate::config::{MappingConfig, MarketoConfig};
use crate::exit::usage;
use crate::object::Object;
use crate::plan::Plan;

/// A field as a describe lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: String,
    pub updateable: bool,
}

/// A describe, and when Marketo gave it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub fields: BTreeMap<String, Field>,
    pub described_at: String,
}

/// The instance and API user describes are stored for: the base URL as the client uses it,
/// and the client id. `None` without valid Marketo settings (push then stops before any call).
pub(crate) fn instance(config: &MarketoConfig) -> Option<(String, String)> {
    let base = crate::net::check_url("marketo.base_url", config.base_url.as_deref()?).ok()?;
    let client_id = config.client_id.clone().filter(|id| !id.is_empty())?;
    Some((base, client_id))
}

/// The stored describes of `instance` younger than `max_age_hours` (none when it is 0), by
/// object. A row that cannot be read is ignored: the object is described again.
pub(crate) fn stored(
    conn: &Connection,
    instance: &(String, String),
    max_age_hours: u32,
) -> Result<BTreeMap<Object, Stored>> {
    let mut out = BTreeMap::new();
    if max_age_hours == 0 {
        return Ok(out);
    }
    let now = chrono::Utc::now();
    let oldest = (now - chrono::Duration::hours(i64::from(max_age_hours)))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let newest = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // A describe stamped in the future (the clock was set back) is not trusted either.
    let mut stmt = conn.prepare(
        "SELECT object, fields, described_at FROM marketo_describe
         WHERE base_url = ?1 AND client_id = ?2 AND described_at > ?3 AND described_at <= ?4",
    )?;
    let rows = stmt.query_map(params![instance.0, instance.1, oldest, newest], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (object, fields, described_at) = row?;
        let Some(object) = Object::from_name(&object) else {
            continue;
        };
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, bool>>(&fields) else {
            continue;
        };
        let fields = fields
            .into_iter()
            .map(|(name, updateable)| (name.clone(), Field { name, updateable }))
            .collect();
        out.insert(
            object,
            Stored {
                fields,
                described_at,
            },
        );
    }
    Ok(out)
}

/// Which objects of `plan` push must describe first: those it sends records of whose stored
/// describe (`stored`) is missing or does not pass the fields they carry. And for the others it
/// sends, when the stored describe that passes them was read.
pub(crate) fn split(
    plan: &Plan,
    stored: BTreeMap<Object, Stored>,
    mapping: &MappingConfig,
) -> (BTreeSet<Object>, BTreeMap<Object, String>) {
    let mut describe = BTreeSet::new();
    let mut trusted = BTreeMap::new();
    for object in Object::ALL {
        let sent = fields_sent(plan, object);
        if sent.is_empty() {
            continue;
        }
        match stored.get(&object) {
            Some(stored) if compare(object, &sent, &stored.fields, mapping.of(object)).is_ok() => {
                trusted.insert(object, stored.described_at.clone());
            }
            _ => {
                describe.insert(object);
            }
        }
    }
    (describe, trusted)
}

/// Stores what a push described, replacing what was stored for the object.
pub(crate) fn store(
    conn: &Connection,
    instance: &(String, String),
    run_id: i64,
    described: &[(Object, Stored)],
) -> Result<()> {
    for (object, stored) in described {
        let fields: BTreeMap<&str, bool> = stored
            .fields
            .values()
            .map(|f| (f.name.as_str(), f.updateable))
            .collect();
        conn.prepare_cached(
            "INSERT INTO marketo_describe (base_url, client_id, object, fields, described_at, run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (base_url, client_id, object) DO UPDATE SET fields = excluded.fields,
                 described_at = excluded.described_at, run_id = excluded.run_id",
        )?
        .execute(params![
            instance.0,
            instance.1,
            object.name(),
            // A field name quoting a secret or the token is stored without it.
            crate::redact::json(&serde_json::to_value(&fields)?),
            stored.described_at,
            run_id
        ])
        .with_context(|| format!("storing Marketo's describe of {}", object.plural()))?;
    }
    Ok(())
}

/// Forgets every stored describe of `object`: Marketo skipped a record of it with 1006, so a
/// field it was described with is gone.
pub(crate) fn forget(conn: &Connection, object: Object) -> Result<()> {
    conn.prepare_cached("DELETE FROM marketo_describe WHERE object = ?1")?
        .execute([object.name()])?;
    Ok(())
}

/// Describes `objects` (every object the plan sends records of, when `None`) and checks the
/// fields those records carry; returns each describe with when it was read, for `store`.
/// Objects with nothing to send are not described, so an idle push makes no call.
pub(crate) fn check(
    client: &MarketoClient,
    plan: &Plan,
    mapping: &MappingConfig,
    objects: Option<&BTreeSet<Object>>,
    max_in_flight: usize,
    calls: &mut Vec<CallLog>,
) -> Result<Vec<(Object, Stored)>> {
    let wanted: Vec<(Object, BTreeSet<String>)> = Object::ALL
        .into_iter()
        .filter(|object| objects.is_none_or(|only| only.contains(object)))
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
    let mut described = Vec::new();
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
            let fields = fields(*object, &answer).ok_or_else(|| {
                anyhow!(
                    "cannot read Marketo's describe of {} ({}): no field list",
                    object.plural(),
                    object.describe_path()
                )
            })?;
            compare(*object, sent, &fields, mapping.of(*object))?;
            Ok(fields)
        });
        match judged {
            Ok(fields) => described.push((
                *object,
                Stored {
                    fields,
                    described_at: crate::run::now(),
                },
            )),
            Err(err) => first_error = Some(err),
        }
    }
    first_error.map_or(Ok(described), Err)
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

    #[test]
    fn a_stored_describe_is_trusted_for_its_instance_within_its_age_only() {
        let conn = crate::db::open_scratch().unwrap();
        conn.execute(
            "INSERT INTO run (run_id, command, args, started_at, outcome) VALUES (1, 'push', '[]', '2026-01-01T00:00:00Z', 'done')",
            [],
        )
        .unwrap();
        let instance = (
            "https://123-abc-456.mktorest.com".to_string(),
            "api".to_string(),
        );
        let fields = described(
            Object::Opportunity,
            json!({"result": [{"fields": [
                {"name": "externalOpportunityId", "updateable": false},
                {"name": "name", "updateable": true}
            ]}]}),
        );
        let described_at = crate::run::now();
        store(
            &conn,
            &instance,
            1,
            &[(
                Object::Opportunity,
                Stored {
                    fields: fields.clone(),
                    described_at,
                },
            )],
        )
        .unwrap();
        let found = stored(&conn, &instance, 24).unwrap();
        assert_eq!(found[&Object::Opportunity].fields, fields);
        assert!(
            stored(&conn, &instance, 0).unwrap().is_empty(),
            "0: never trusted"
        );
        let other = (instance.0.clone(), "another-api-user".to_string());
        assert!(stored(&conn, &other, 24).unwrap().is_empty());
        let set = |sql: &str| conn.execute(sql, []).unwrap();
        set(
            "UPDATE marketo_describe SET described_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+2 hours')",
        );
        assert!(
            stored(&conn, &instance, 24).unwrap().is_empty(),
            "stamped in the future"
        );
        set(
            "UPDATE marketo_describe SET described_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-3 hours')",
        );
        assert!(
            stored(&conn, &instance, 2).unwrap().is_empty(),
            "older than its age"
        );
        assert_eq!(stored(&conn, &instance, 4).unwrap().len(), 1);
        set("UPDATE marketo_describe SET fields = 'not json'");
        assert!(
            stored(&conn, &instance, 4).unwrap().is_empty(),
            "unreadable: described again"
        );
        forget(&conn, Object::Opportunity).unwrap();
        assert_eq!(
            conn.query_row("SELECT count(*) FROM marketo_describe", [], |r| r
                .get::<_, i64>(0))
                .unwrap(),
            0
        );
    }
}
