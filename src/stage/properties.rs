//! Property tests: random Web API pages (random shapes, types, keys, annotations, nesting,
//! duplicate keys) through `page::parse` and `stage_page`. Whatever arrives, nothing panics and
//! the outcome is a documented one: the page is refused with a message naming its source, or
//! every record is accounted for as staged, deleted, rejected, filtered or unknown.

use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::*;
use crate::source::page;

const SOURCE: &str = "random/page.json";

/// Keys oppsync reads, so that random records exercise the typed paths, plus noise.
const KEYS: &[&str] = &[
    "opportunityid",
    "accountid",
    "contactid",
    "connectionid",
    "connectionroleid",
    "name",
    "estimatedvalue",
    "estimatedclosedate",
    "closeprobability",
    "statecode",
    "modifiedon",
    "new_synctomkto",
    "_customerid_value",
    "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname",
    "_record1id_value",
    "record1objecttypecode",
    "_record2roleid_value@OData.Community.Display.V1.FormattedValue",
    "industrycode",
    "@odata.context",
    "@odata.etag",
    "id",
    "reason",
    "x",
];

const CONTEXTS: &[&str] = &[
    "https://x.invalid/api/data/v9.2/$metadata#opportunities",
    "https://x.invalid/api/data/v9.2/$metadata#accounts/$deletedEntity",
    "https://x.invalid/api/data/v9.2/$metadata#connections(name)/$delta",
    "https://x.invalid/api/data/v9.2/$metadata#widgets",
    "https://x.invalid/api/data/v9.2/$metadata#opportunities/$entity",
    "no metadata here",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!("a7d3c2b1-2c44-ef11-a316-000d3a5c0001")),
        Just(json!("{A7D3C2B1-2C44-EF11-A316-000D3A5C0002}")),
        Just(json!("2025-06-30")),
        Just(json!("2025-06-30T10:00:00Z")),
        Just(json!("opportunity")),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..4).prop_map(|members| {
                Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// An object's members, duplicates allowed, as JSON text.
fn object_text(members: &[(String, Value)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}: {v}", Value::from(k.as_str())))
        .collect();
    format!("{{{}}}", body.join(", "))
}

/// A random GUID in any case, sometimes braced.
fn guid() -> impl Strategy<Value = Value> {
    (any::<u128>(), any::<bool>(), any::<bool>()).prop_map(|(n, upper, braces)| {
        let hex = format!("{n:032x}");
        let mut text = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        if upper {
            text = text.to_ascii_uppercase();
        }
        if braces {
            text = format!("{{{text}}}");
        }
        Value::from(text)
    })
}

fn record() -> impl Strategy<Value = String> {
    prop_oneof![
        // A record of one of the staged entity sets, keyed, with random other members.
        6 => (
            prop::sample::select(&["opportunityid", "accountid", "contactid", "connectionid", "connectionroleid"][..]),
            guid(),
            prop::collection::vec((prop::sample::select(KEYS), prop_oneof![3 => scalar(), 1 => guid()]), 0..6),
        )
            .prop_map(|(key, id, rest)| {
                let mut members = vec![(key.to_string(), id)];
                members.extend(rest.into_iter().map(|(k, v)| (k.to_string(), v)));
                object_text(&members)
            }),
        // A change-tracking delete.
        1 => (prop::sample::select(CONTEXTS), prop_oneof![guid(), scalar()]).prop_map(|(context, id)| {
            object_text(&[("@odata.context".into(), Value::from(context)), ("id".into(), id)])
        }),
        2 => prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(KEYS).prop_map(str::to_string),
                    Just("@odata.context".to_string()),
                ],
                prop_oneof![
                    3 => scalar(),
                    1 => value(),
                    1 => prop::sample::select(CONTEXTS).prop_map(Value::from),
                ],
            ),
            0..8,
        )
        .prop_map(|members| object_text(&members)),
        1 => value().prop_map(|v| v.to_string()),
    ]
}

fn page_text() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.5, prop::sample::select(&CONTEXTS[..4])),
        prop::collection::vec(record(), 0..6),
        prop::option::weighted(
            0.3,
            prop_oneof![3 => ".{0,20}".prop_map(Value::from), 1 => value()],
        ),
        prop::option::weighted(
            0.3,
            prop_oneof![3 => ".{0,20}".prop_map(Value::from), 1 => value()],
        ),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(context, records, next, delta, duplicate)| {
            let mut members: Vec<(String, Value)> = Vec::new();
            if let Some(context) = context {
                members.push(("@odata.context".into(), Value::from(context)));
            }
            if let Some(next) = next {
                members.push(("@odata.nextLink".into(), next));
            }
            if let Some(delta) = delta {
                members.push(("@odata.deltaLink".into(), delta));
            }
            let mut text = object_text(&members);
            // The records go in as text, so that they may carry duplicate keys.
            let records = format!("[{}]", records.join(", "));
            text.truncate(text.len() - 1);
            let sep = if members.is_empty() { "" } else { ", " };
            text.push_str(&format!("{sep}\"value\": {records}"));
            if duplicate {
                text.push_str(", \"value\": []");
            }
            text.push('}');
            text
        })
}

fn db() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    crate::db::configure(&conn).unwrap();
    crate::db::migrate(&mut conn).unwrap();
    conn.execute(
        "INSERT INTO run (run_id, command, args, started_at) VALUES (1, 'test', '[]', 'now')",
        [],
    )
    .unwrap();
    conn
}

fn check(conn: &mut Connection, text: &str, hint: Option<&str>) -> Result<(), TestCaseError> {
    let page = match page::parse(SOURCE, text, hint) {
        Ok(page) => page,
        Err(err) => {
            let message = format!("{err:#}");
            prop_assert!(message.starts_with(SOURCE), "{message}");
            prop_assert!(!message.contains('\n'), "{message}");
            return Ok(());
        }
    };
    let records = page.records.len() as u64;
    let report =
        stage_page(conn, 1, SOURCE, &page).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    let c = &report.counts;
    prop_assert_eq!(
        c.upserted + c.deleted + c.rejected + c.unknown + c.filtered,
        records,
        "every record is accounted for: {:?}",
        c
    );
    prop_assert_eq!(report.rejections.len() as u64, c.rejected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_pages_are_staged_or_refused_never_panic(text in page_text(), hint in prop::option::of(prop::sample::select(&["opportunities.json", "accounts-2.json", "connections.json", "x.json"][..]))) {
        let mut conn = db();
        check(&mut conn, &text, hint)?;
    }

    #[test]
    fn random_bytes_are_refused_or_staged_never_panic(text in "\\PC{0,80}") {
        let mut conn = db();
        check(&mut conn, &text, Some("opportunities.json"))?;
    }

    #[test]
    fn every_staged_key_is_a_bare_lower_case_guid(text in page_text()) {
        let mut conn = db();
        check(&mut conn, &text, Some("opportunities.json"))?;
        for spec in SPECS {
            let bad: i64 = conn.query_row(
                &format!("SELECT count(*) FROM {} WHERE {} NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-*' OR length({1}) <> 36 OR {1} <> lower({1})", spec.table, spec.key),
                [],
                |r| r.get(0),
            ).unwrap();
            prop_assert_eq!(bad, 0, "{} keys", spec.table);
        }
    }
}

/// Ids that versions of the same few records share, so that they update each other.
const IDS: &[&str] = &[
    "a7d3c2b1-2c44-ef11-a316-000d3a5c0001",
    "a7d3c2b1-2c44-ef11-a316-000d3a5c0002",
    "A7D3C2B1-2C44-EF11-A316-000D3A5C0003",
];

/// A member of a version of an opportunity or a contact, with the logical name a lookup
/// (`_..._value`) carries: indexed columns (references, owners, `modifiedon`, the email) among
/// the others, values repeating.
fn version_member(set: &'static str) -> impl Strategy<Value = (&'static str, Value, &'static str)> {
    let id = prop::sample::select(IDS).prop_map(Value::from);
    let members: &'static [&'static str] = if set == "opportunities" {
        &[
            "name",
            "estimatedvalue",
            "modifiedon",
            "_customerid_value",
            "_parentaccountid_value",
            "_parentcontactid_value",
            "_ownerid_value",
            "new_synctomkto",
        ]
    } else {
        &[
            "jobtitle",
            "emailaddress1",
            "modifiedon",
            "_parentcustomerid_value",
            "_ownerid_value",
            "new_synctomkto",
        ]
    };
    (
        prop::sample::select(members),
        prop_oneof![
            Just(Value::Null),
            id,
            prop::sample::select(&["a", "A@x.invalid", "a@x.invalid", " a@x.invalid"][..])
                .prop_map(Value::from),
            prop::sample::select(&["2025-06-30T10:00:00Z", "2025-07-01T10:00:00Z"][..])
                .prop_map(Value::from),
            prop::sample::select(&[1.0, 2.5][..]).prop_map(Value::from),
            prop::sample::select(&[1_i64, 2][..]).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        prop::sample::select(&["account", "contact", "systemuser", "team"][..]),
    )
}

/// A page of versions (and deletes) of the records keyed by `IDS` of one entity set.
fn versions_page(set: &'static str) -> impl Strategy<Value = String> {
    let key = if set == "opportunities" {
        "opportunityid"
    } else {
        "contactid"
    };
    let version = (
        prop::sample::select(IDS),
        prop::collection::vec(version_member(set), 0..6),
        prop::bool::weighted(0.15),
    )
        .prop_map(move |(id, members, delete)| {
            if delete {
                let context =
                    format!("https://x.invalid/api/data/v9.2/$metadata#{set}/$deletedEntity");
                return object_text(&[
                    ("@odata.context".into(), Value::from(context)),
                    ("id".into(), Value::from(id)),
                ]);
            }
            let mut all = vec![(key.to_string(), Value::from(id))];
            for (name, value, logical) in members {
                if name.starts_with('_') && !value.is_null() {
                    // A lookup with its type, as the Web API sends it.
                    all.push((
                        format!("{name}@Microsoft.Dynamics.CRM.lookuplogicalname"),
                        Value::from(logical),
                    ));
                }
                all.push((name.to_string(), value));
            }
            object_text(&all)
        });
    prop::collection::vec(version, 1..5).prop_map(move |records| {
        format!(
            "{{\"@odata.context\": \"https://x.invalid/api/data/v9.2/$metadata#{set}\", \"value\": [{}]}}",
            records.join(", ")
        )
    })
}

/// Every row of `table` and the change-tracking marks, as text.
fn stored(conn: &Connection, table: &str, key: &str) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for sql in [
        format!("SELECT * FROM {table} ORDER BY {key}"),
        "SELECT * FROM export_dirty ORDER BY kind, value".to_string(),
    ] {
        let mut statement = conn.prepare(&sql).unwrap();
        let width = statement.column_count();
        let mut result = statement.query([]).unwrap();
        while let Some(row) = result.next().unwrap() {
            let values: Vec<String> = (0..width)
                .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            rows.push(values.join("|"));
        }
    }
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A new version of a stored record skips the indexed columns that keep their value
    /// (`stage_version`); a table whose lookup indexes are set aside takes the upsert. Both must
    /// store the same rows and mark the same changes, version after version.
    #[test]
    fn versions_staged_with_the_indexes_in_place_store_what_the_upsert_stores(
        (set, pages) in prop::sample::select(&["opportunities", "contacts"][..])
            .prop_flat_map(|set| (Just(set), prop::collection::vec(versions_page(set), 1..6))),
    ) {
        let spec = spec_for(set).unwrap();
        let mut in_place = db();
        let mut aside = db();
        for conn in [&mut in_place, &mut aside] {
            conn.execute("UPDATE export_state SET built = 1", []).unwrap();
        }
        prop_assert!(indexes::set_aside_if_empty(&mut aside, spec.table).unwrap() > 0);
        for (n, text) in pages.iter().enumerate() {
            let page = page::parse(SOURCE, text, None).unwrap();
            let a = stage_page(&mut in_place, 1, SOURCE, &page).unwrap();
            let b = stage_page(&mut aside, 1, SOURCE, &page).unwrap();
            prop_assert_eq!(&a.counts, &b.counts, "page {}: {}", n, text);
            prop_assert_eq!(
                stored(&in_place, spec.table, spec.key),
                stored(&aside, spec.table, spec.key),
                "after page {}: {}", n, text
            );
        }
    }
}
