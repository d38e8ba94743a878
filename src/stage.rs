//! Records -> staging tables: upserts, tombstones and rejects, one transaction per page.
//!
//! Each entity set has a spec listing the typed columns the rules and default mappings read and
//! the Web API key each comes from. A page's records are validated one by one: a record without
//! its primary key, or with a value of the wrong JSON type for a typed column, goes to
//! `rejected_record` and the rest of the page is staged. Typed columns merge across pages (a
//! key absent from a record keeps the stored value, because a Web API page carries only the
//! selected columns); `raw` is always the last version received, exactly as sent.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use serde_json::{Map, Value};

use crate::redact::redact;
use crate::run::now;
use crate::source::page::{self, Page};
use crate::source::strict;

pub(crate) mod indexes;

const LOOKUP_TYPE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";
const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

/// How a Web API value becomes a typed column.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    /// A GUID (primary key or lookup): lower-cased so that joins match however it was written.
    Guid,
    Integer,
    Real,
    Bool,
    /// A DateOnly column: `YYYY-MM-DD`, or a timestamp whose date part is kept.
    Date,
    /// A UTC timestamp, kept as sent after validation.
    DateTime,
    /// An annotation on `base` (`base@suffix`): present whenever `base` is.
    Annotation {
        base: &'static str,
        suffix: &'static str,
    },
}

#[derive(Debug)]
struct Column {
    column: &'static str,
    key: &'static str,
    kind: Kind,
}

const fn col(column: &'static str, key: &'static str, kind: Kind) -> Column {
    Column { column, key, kind }
}

const fn lookup_type(column: &'static str, base: &'static str) -> Column {
    Column {
        column,
        key: "",
        kind: Kind::Annotation {
            base,
            suffix: LOOKUP_TYPE,
        },
    }
}

const fn label(column: &'static str, base: &'static str) -> Column {
    Column {
        column,
        key: "",
        kind: Kind::Annotation {
            base,
            suffix: FORMATTED,
        },
    }
}

/// One staged entity set: its table, primary key and typed columns.
#[derive(Debug)]
pub(crate) struct EntitySpec {
    pub entity_set: &'static str,
    pub table: &'static str,
    pub key: &'static str,
    columns: &'static [Column],
    /// The typed columns some index of the table reads, directly or through a generated column:
    /// a new version of a live record assigns those whose value changes and leaves the others,
    /// so that SQLite rewrites only the entries of the indexes that move (`stage_version`).
    /// Only speed rests on the list: a column missing from it is always assigned, as before. A
    /// unit test holds it to the schema's indexes.
    indexed: &'static [&'static str],
}

use Kind::{Bool, Date, DateTime, Guid, Integer, Real, Text};

pub(crate) const SPECS: &[EntitySpec] = &[
    EntitySpec {
        entity_set: "opportunities",
        table: "opportunity",
        key: "opportunityid",
        indexed: &[
            "modifiedon",
            "customerid",
            "parentaccountid",
            "parentcontactid",
            "ownerid",
            "ownerid_type",
        ],
        columns: &[
            col("name", "name", Text),
            col("description", "description", Text),
            col("estimatedvalue", "estimatedvalue", Real),
            col("actualvalue", "actualvalue", Real),
            col("estimatedvalue_base", "estimatedvalue_base", Real),
            col("actualvalue_base", "actualvalue_base", Real),
            col("estimatedclosedate", "estimatedclosedate", Date),
            col("actualclosedate", "actualclosedate", Date),
            col("closeprobability", "closeprobability", Integer),
            col("statecode", "statecode", Integer),
            col("statuscode", "statuscode", Integer),
            col("stepname", "stepname", Text),
            col("createdon", "createdon", DateTime),
            col("modifiedon", "modifiedon", DateTime),
            col("customerid", "_customerid_value", Guid),
            lookup_type("customerid_type", "_customerid_value"),
            col("parentaccountid", "_parentaccountid_value", Guid),
            col("parentcontactid", "_parentcontactid_value", Guid),
            col("ownerid", "_ownerid_value", Guid),
            lookup_type("ownerid_type", "_ownerid_value"),
            col("new_synctomkto", "new_synctomkto", Bool),
        ],
    },
    EntitySpec {
        entity_set: "accounts",
        table: "account",
        key: "accountid",
        indexed: &["ownerid", "ownerid_type"],
        columns: &[
            col("name", "name", Text),
            col("websiteurl", "websiteurl", Text),
            col("numberofemployees", "numberofemployees", Integer),
            col("revenue", "revenue", Real),
            col("revenue_base", "revenue_base", Real),
            col("industrycode", "industrycode", Integer),
            label("industrycode_label", "industrycode"),
            col("telephone1", "telephone1", Text),
            col("address1_line1", "address1_line1", Text),
            col("address1_line2", "address1_line2", Text),
            col("address1_line3", "address1_line3", Text),
            col("address1_city", "address1_city", Text),
            col("address1_stateorprovince", "address1_stateorprovince", Text),
            col("address1_postalcode", "address1_postalcode", Text),
            col("address1_country", "address1_country", Text),
            col("statecode", "statecode", Integer),
            col("modifiedon", "modifiedon", DateTime),
            col("ownerid", "_ownerid_value", Guid),
            lookup_type("ownerid_type", "_ownerid_value"),
            col("new_synctomkto", "new_synctomkto", Bool),
        ],
    },
    EntitySpec {
        entity_set: "contacts",
        table: "contact",
        key: "contactid",
        indexed: &[
            "emailaddress1",
            "parentcustomerid",
            "ownerid",
            "ownerid_type",
        ],
        columns: &[
            col("firstname", "firstname", Text),
            col("lastname", "lastname", Text),
            col("fullname", "fullname", Text),
            col("emailaddress1", "emailaddress1", Text),
            col("jobtitle", "jobtitle", Text),
            col("telephone1", "telephone1", Text),
            col("parentcustomerid", "_parentcustomerid_value", Guid),
            lookup_type("parentcustomerid_type", "_parentcustomerid_value"),
            col("statecode", "statecode", Integer),
            col("modifiedon", "modifiedon", DateTime),
            col("ownerid", "_ownerid_value", Guid),
            lookup_type("ownerid_type", "_ownerid_value"),
            col("new_synctomkto", "new_synctomkto", Bool),
        ],
    },
    EntitySpec {
        entity_set: "connections",
        table: "connection",
        key: "connectionid",
        indexed: &["record1id", "record2id", "record1roleid", "record2roleid"],
        columns: &[
            col("record1id", "_record1id_value", Guid),
            lookup_type("record1id_type", "_record1id_value"),
            col("record1objecttypecode", "record1objecttypecode", Integer),
            col("record1roleid", "_record1roleid_value", Guid),
            label("record1roleid_label", "_record1roleid_value"),
            col("record2id", "_record2id_value", Guid),
            lookup_type("record2id_type", "_record2id_value"),
            col("record2objecttypecode", "record2objecttypecode", Integer),
            col("record2roleid", "_record2roleid_value", Guid),
            label("record2roleid_label", "_record2roleid_value"),
            col("relatedconnectionid", "_relatedconnectionid_value", Guid),
            col("ismaster", "ismaster", Bool),
            col("statecode", "statecode", Integer),
            col("modifiedon", "modifiedon", DateTime),
        ],
    },
    EntitySpec {
        entity_set: "systemusers",
        table: "systemuser",
        key: "systemuserid",
        indexed: &[],
        columns: &[
            col("fullname", "fullname", Text),
            col("firstname", "firstname", Text),
            col("lastname", "lastname", Text),
            col("internalemailaddress", "internalemailaddress", Text),
            col("title", "title", Text),
            col("mobilephone", "mobilephone", Text),
            col("address1_telephone1", "address1_telephone1", Text),
            col("isdisabled", "isdisabled", Bool),
            col("modifiedon", "modifiedon", DateTime),
        ],
    },
    EntitySpec {
        entity_set: "connectionroles",
        table: "connectionrole",
        key: "connectionroleid",
        indexed: &[],
        columns: &[
            col("name", "name", Text),
            col("category", "category", Integer),
            col("statecode", "statecode", Integer),
        ],
    },
];

/// The order a live pull reads entity sets in: roles and parents before what points at them.
pub(crate) const LIVE_ORDER: &[&str] = &[
    "systemusers",
    "connectionroles",
    "accounts",
    "contacts",
    "opportunities",
    "connections",
];

/// The spec of a staged entity set, or `None` for one oppsync does not stage.
pub(crate) fn spec_for(entity_set: &str) -> Option<&'static EntitySpec> {
    SPECS.iter().find(|spec| spec.entity_set == entity_set)
}

impl EntitySpec {
    /// The Web API columns to `$select`: the primary key and every typed column's source
    /// (annotations come with `Prefer: odata.include-annotations`).
    pub(crate) fn select_columns(&self) -> Vec<&'static str> {
        let mut columns = vec![self.key];
        columns.extend(
            self.columns
                .iter()
                .filter(|c| !matches!(c.kind, Kind::Annotation { .. }))
                .map(|c| c.key),
        );
        columns
    }

    /// The columns a live query of this entity set selects: `select_columns`, and every column
    /// a `[mapping.*]` of its Marketo object reads from the staged record (an annotation's base
    /// column, which brings the annotation with it).
    pub(crate) fn select_columns_mapped<'a>(
        &self,
        mapping: &'a crate::config::MappingConfig,
    ) -> Vec<&'a str> {
        let mut columns = self.select_columns();
        let object = crate::object::Object::from_entity_set(self.entity_set);
        for column in object.into_iter().flat_map(|o| mapping.of(o).values()) {
            let base = column.split('@').next().unwrap_or(column);
            if !columns.contains(&base) {
                columns.push(base);
            }
        }
        columns
    }

    /// Whether the table has `modifiedon`, which a watermark pull needs.
    pub(crate) fn has_modifiedon(&self) -> bool {
        self.columns.iter().any(|c| c.column == "modifiedon")
    }

    /// The upsert, seen and tombstone statements, built once per process: the statement cache
    /// is keyed by their text, so every record of every page reuses the same prepared statements.
    fn statements(&self) -> &'static Statements {
        static BUILT: OnceLock<Vec<Statements>> = OnceLock::new();
        let built = BUILT.get_or_init(|| {
            SPECS
                .iter()
                .map(|spec| Statements {
                    upsert: spec.upsert_sql(),
                    probe: spec.probe_sql(),
                    updates: (0..1u32 << spec.indexed.len())
                        .map(|_| OnceLock::new())
                        .collect(),
                    seen: spec.seen_sql(),
                    delete: spec.delete_sql(),
                })
                .collect()
        });
        let index = SPECS
            .iter()
            .position(|spec| spec.entity_set == self.entity_set)
            // Specs are only ever obtained from SPECS (`spec_for`), so this one is in it.
            .expect("every EntitySpec is an element of SPECS");
        &built[index]
    }

    /// Upsert: every typed column is bound twice, its value and whether the record carried it.
    fn upsert_sql(&self) -> String {
        let n = self.columns.len();
        let mut names = vec![self.key];
        names.extend(self.columns.iter().map(|c| c.column));
        let values: Vec<String> = (1..=n + 1).map(|i| format!("?{i}")).collect();
        let mut sql = format!(
            "INSERT INTO {table} ({names}, raw, source_file, staged_run, seen_run) \
             VALUES ({values}, ?{raw}, ?{src}, ?{run}, ?{run}) \
             ON CONFLICT ({key}) DO UPDATE SET ",
            table = self.table,
            names = names.join(", "),
            values = values.join(", "),
            raw = 2 * n + 2,
            src = 2 * n + 3,
            run = 2 * n + 4,
            key = self.key,
        );
        for (i, column) in self.columns.iter().enumerate() {
            let name = column.column;
            let present = n + 2 + i;
            let _ = write!(
                sql,
                "{name} = CASE WHEN ?{present} THEN excluded.{name} ELSE {table}.{name} END, ",
                table = self.table
            );
        }
        // A live record staged again as it was is left as it is (no row changes, and `seen`
        // then only moves its seen_run): it keeps the run and page that staged that version,
        // so a run that changed nothing is referred to by no record and `run::prune` may remove
        // it once old (a watermark pull reads its last seconds again every time), and staging
        // it again rewrites none of its index entries.
        let _ = write!(
            sql,
            "raw = excluded.raw, source_file = excluded.source_file, staged_run = excluded.staged_run, \
             seen_run = excluded.seen_run, deleted_run = NULL, deleted_reason = NULL \
             WHERE {table}.raw IS NOT excluded.raw OR {table}.deleted_run IS NOT NULL",
            table = self.table
        );
        sql
    }

    /// What a new version would change in the stored record keyed ?1, bound as `upsert` binds
    /// it up to `raw`: one row, if stored, of whether `raw` is the same, whether the record is
    /// live, then for each `indexed` column whether its value stays (absent from the record,
    /// or the same).
    fn probe_sql(&self) -> String {
        let n = self.columns.len();
        let mut sql = format!("SELECT raw IS ?{raw}, deleted_run IS NULL", raw = 2 * n + 2);
        for name in self.indexed {
            let i = self.column_index(name);
            let _ = write!(
                sql,
                ", (NOT ?{present} OR {name} IS ?{value})",
                present = n + 2 + i,
                value = i + 2
            );
        }
        let _ = write!(
            sql,
            " FROM {table} WHERE {key} = ?1",
            table = self.table,
            key = self.key
        );
        sql
    }

    /// Writes a new version of a live record, bound as `upsert` binds it: every typed column
    /// the record carries but the `indexed` ones that keep their value (bit i of `changed` set
    /// for `indexed[i]` changing), so that SQLite leaves those indexes' entries alone.
    fn update_sql(&self, changed: u32) -> String {
        let n = self.columns.len();
        let mut sql = format!("UPDATE {table} SET ", table = self.table);
        for (i, column) in self.columns.iter().enumerate() {
            let name = column.column;
            let (present, value) = (n + 2 + i, i + 2);
            match self.indexed.iter().position(|c| *c == name) {
                Some(bit) if changed & (1 << bit) == 0 => {}
                Some(_) => {
                    let _ = write!(sql, "{name} = ?{value}, ");
                }
                None => {
                    let _ = write!(
                        sql,
                        "{name} = CASE WHEN ?{present} THEN ?{value} ELSE {name} END, "
                    );
                }
            }
        }
        let _ = write!(
            sql,
            "raw = ?{raw}, source_file = ?{src}, staged_run = ?{run}, seen_run = ?{run} WHERE {key} = ?1",
            raw = 2 * n + 2,
            src = 2 * n + 3,
            run = 2 * n + 4,
            key = self.key,
        );
        sql
    }

    /// The position of the typed column `name` (one of `indexed`).
    fn column_index(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c.column == name)
            .expect("every indexed column of an EntitySpec is one of its typed columns")
    }

    /// Notes that run ?2 saw the record keyed ?1 (which `upsert` left as it was): a full pull
    /// tombstones the records it did not see (`sweep_missing`).
    fn seen_sql(&self) -> String {
        format!(
            "UPDATE {table} SET seen_run = ?2 WHERE {key} = ?1",
            table = self.table,
            key = self.key
        )
    }

    /// Tombstone: a record already staged keeps its last version in `raw`; an unknown one is
    /// inserted with the delete record as `raw` so the audit trail shows what arrived.
    fn delete_sql(&self) -> String {
        if self.entity_set == "connections" {
            // A delete carries only the id, and most connections touch no opportunity and were
            // never staged: only tombstone the ones that were.
            return "UPDATE connection SET seen_run = ?4, staged_run = ?4, source_file = ?3, \
                 deleted_run = coalesce(deleted_run, ?4), deleted_reason = 'deleted' \
                 WHERE connectionid = ?1 AND ?2 IS NOT NULL"
                .to_string();
        }
        format!(
            "INSERT INTO {table} ({key}, raw, source_file, staged_run, seen_run, deleted_run, deleted_reason) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?4, 'deleted') \
             ON CONFLICT ({key}) DO UPDATE SET seen_run = excluded.seen_run, \
             staged_run = excluded.staged_run, source_file = excluded.source_file, \
             deleted_run = coalesce({table}.deleted_run, excluded.deleted_run), deleted_reason = 'deleted'",
            table = self.table,
            key = self.key
        )
    }

    /// The typed values of one record: (value, present) per column, or why it is rejected.
    fn extract(
        &self,
        record: &Map<String, Value>,
    ) -> Result<(String, Vec<(SqlValue, bool)>), String> {
        let key = match record.get(self.key) {
            None | Some(Value::Null) => return Err(format!("missing primary key {}", self.key)),
            Some(value) => match value.as_str().and_then(guid) {
                Some(key) => key,
                None => {
                    return Err(format!(
                        "{}: expected a GUID, got {}",
                        self.key,
                        describe(value)
                    ));
                }
            },
        };
        let mut values = Vec::with_capacity(self.columns.len());
        for column in self.columns {
            let (json_key, present_key) = match column.kind {
                Kind::Annotation { base, suffix } => (format!("{base}{suffix}"), base),
                _ => (column.key.to_string(), column.key),
            };
            let present = record.contains_key(present_key);
            let value = match record.get(&json_key) {
                None | Some(Value::Null) => SqlValue::Null,
                Some(value) => {
                    convert(column.kind, value).map_err(|why| format!("{json_key}: {why}"))?
                }
            };
            values.push((value, present));
        }
        Ok((key, values))
    }
}

/// Whether a connection row has an opportunity on either side, by the lookuplogicalname
/// annotation or the objecttypecode (3). A row that carries neither cannot be judged and is
/// kept, so that the views decide.
fn touches_opportunity(record: &Map<String, Value>) -> bool {
    let mut typed = false;
    for side in ["1", "2"] {
        let annotation = record
            .get(&format!("_record{side}id_value{LOOKUP_TYPE}"))
            .and_then(Value::as_str);
        let code = record
            .get(&format!("record{side}objecttypecode"))
            .and_then(Value::as_i64);
        if annotation == Some("opportunity") || code == Some(3) {
            return true;
        }
        typed |= annotation.is_some() || code.is_some();
    }
    !typed
}

fn convert(kind: Kind, value: &Value) -> Result<SqlValue, String> {
    let wrong = |expected: &str| Err(format!("expected {expected}, got {}", describe(value)));
    match (kind, value) {
        (Kind::Text | Kind::Annotation { .. }, Value::String(s)) => Ok(SqlValue::Text(s.clone())),
        (Kind::Text | Kind::Annotation { .. }, _) => wrong("a string"),
        (Kind::Guid, Value::String(s)) => guid(s)
            .map(SqlValue::Text)
            .ok_or(())
            .or_else(|()| wrong("a GUID")),
        (Kind::Guid, _) => wrong("a GUID"),
        (Kind::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(SqlValue::Integer(i)),
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(SqlValue::Integer(f as i64)),
                _ => wrong("an integer"),
            },
        },
        (Kind::Integer, _) => wrong("an integer"),
        (Kind::Real, Value::Number(n)) => n
            .as_f64()
            .map(SqlValue::Real)
            .ok_or(())
            .or_else(|()| wrong("a number")),
        (Kind::Real, _) => wrong("a number"),
        (Kind::Bool, Value::Bool(b)) => Ok(SqlValue::Integer(i64::from(*b))),
        (Kind::Bool, _) => wrong("a boolean"),
        (Kind::Date, Value::String(s)) => parse_date(s)
            .map(SqlValue::Text)
            .ok_or(())
            .or_else(|()| wrong("a date (YYYY-MM-DD or an ISO 8601 timestamp)")),
        (Kind::Date, _) => wrong("a date string"),
        (Kind::DateTime, Value::String(s)) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            Ok(SqlValue::Text(s.clone()))
        }
        (Kind::DateTime, _) => wrong("an ISO 8601 timestamp"),
    }
}

/// A Dataverse GUID (`8-4-4-4-12` hex digits, any case, optionally in braces) in the one form
/// staging keeps: lower case, no braces, so that joins match however it was written. Anything
/// else is not a key: it could never match a record, and it must not reach Marketo as one.
pub(crate) fn guid(text: &str) -> Option<String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let well_formed = inner.len() == 36
        && inner.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    well_formed.then(|| inner.to_ascii_lowercase())
}

/// A DateOnly value: the Web API is expected to send `YYYY-MM-DD` (unconfirmed, see the
/// reference's open items), so a full timestamp is accepted too and its date part kept.
fn parse_date(s: &str) -> Option<String> {
    let date_part = s.get(..10)?;
    let date = chrono::NaiveDate::parse_from_str(date_part, "%Y-%m-%d").ok()?;
    let rest = &s[10..];
    if !rest.is_empty() && chrono::DateTime::parse_from_rfc3339(s).is_err() {
        return None;
    }
    Some(date.format("%Y-%m-%d").to_string())
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    let shown: String = text.chars().take(40).collect();
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if shown.len() < text.len() {
        format!("{kind} {shown}…")
    } else {
        format!("{kind} {shown}")
    }
}

/// What staging one page did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PageCounts {
    pub upserted: u64,
    pub deleted: u64,
    pub rejected: u64,
    /// Records of a page whose entity set oppsync does not stage.
    pub unknown: u64,
    /// Connections that touch no opportunity (and deletes of connections never staged): change
    /// tracking allows no `$filter`, so they arrive and are left out here.
    pub filtered: u64,
    /// Of the upserted, records staged again as they were (same raw, live): they keep the run
    /// that staged them, so a run whose upserts were all unchanged staged nothing.
    pub unchanged: u64,
}

/// The statements that stage one entity set's records.
struct Statements {
    /// Inserts a record, or writes a new version of it (every typed column bound twice, its
    /// value and whether the record carried it); changes no row for a live record as it was.
    upsert: String,
    /// What a new version would change in a stored record (`EntitySpec::probe_sql`).
    probe: String,
    /// The update of a live record, per set of changed indexed columns, built when first used
    /// (`EntitySpec::update_sql`).
    updates: Vec<OnceLock<String>>,
    /// Notes that a run saw a record `upsert` left as it was.
    seen: String,
    /// Tombstones a record.
    delete: String,
}

/// A rejected record, as reported to the user.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    pub position: usize,
    pub entity_set: Option<String>,
    /// What identifies the record across pulls: its id, else a digest of its text.
    pub key: String,
    pub reason: String,
}

/// The id of a rejected record (its primary key, or a delete's `id`), as well as it can be
/// read; else a digest of its text, so that the same bad record is recognised next time.
fn rejection_key(entity_set: Option<&str>, raw: &str) -> String {
    let key_name = entity_set.and_then(spec_for).map(|spec| spec.key);
    let members = strict::object_members(raw).ok();
    let id = members.as_ref().and_then(|m| {
        key_name
            .and_then(|k| m.get(k))
            .or_else(|| m.get("id"))
            .map(|v| v.get().trim_matches('"').to_string())
    });
    match id {
        Some(id) => guid(&id).unwrap_or(id),
        None => {
            // FNV-1a: stable across builds, unlike the standard library's hasher.
            let digest = raw.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            format!("digest:{digest:016x}")
        }
    }
}

/// What staging one page did, and why records were rejected.
#[derive(Debug)]
pub(crate) struct PageReport {
    pub entity_set: Option<String>,
    pub counts: PageCounts,
    pub rejections: Vec<Rejection>,
}

/// Writes one record, bound as `EntitySpec::upsert_sql` binds it, into a table whose lookup
/// indexes are in place: a live record is updated without the indexed columns that keep their
/// value (`EntitySpec::update_sql`), a new or tombstoned one upserted. Returns the rows written:
/// 0 for a live record staged again as it was.
///
/// An upsert assigns every column, so SQLite rewrites the record's entry in each of its table's
/// indexes, though a new version seldom moves one: six leaves of an opportunity besides its
/// row, for a change of amount. The change-tracking triggers compare the whole old and new row
/// either way, so they decide as they did.
fn stage_version(tx: &Transaction<'_>, spec: &EntitySpec, bound: &[SqlValue]) -> Result<usize> {
    let statements = spec.statements();
    let up_to_raw = 2 * spec.columns.len() + 2;
    let stored = tx
        .prepare_cached(&statements.probe)?
        .query_row(params_from_iter(&bound[..up_to_raw]), |r| {
            let mut changed = 0u32;
            for bit in 0..spec.indexed.len() {
                if !r.get::<_, bool>(2 + bit)? {
                    changed |= 1 << bit;
                }
            }
            Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?, changed))
        })
        .optional()?;
    Ok(match stored {
        Some((true, true, _)) => 0,
        Some((false, true, changed)) => {
            let sql = statements.updates[changed as usize].get_or_init(|| spec.update_sql(changed));
            tx.prepare_cached(sql)?.execute(params_from_iter(bound))?
        }
        _ => tx
            .prepare_cached(&statements.upsert)?
            .execute(params_from_iter(bound))?,
    })
}

/// Stages one parsed page from `source` in one transaction.
///
/// With SQLite's temp storage in memory meanwhile, for its statement journals: each record's
/// write (which the `export_dirty` triggers make a statement that may fail after a first write)
/// journals every page it changes: for an upsert, a table page and one of each index, 64 KiB,
/// just past the size at which SQLite moves a statement journal to a temp file. Written to temp
/// files, two writes a page, a 1% delta pull at 1M opportunities wrote 1.45 GB for its 20,000
/// records (353k of the pull's 855k pwrite calls, and 0.3-0.6 s of kernel time). In memory, a
/// journal is dropped at the end of its statement. The setting is put back after the page:
/// sorts and temp tables (the evaluation of the export rows) go to temp files, as before.
pub(crate) fn stage_page(
    conn: &mut Connection,
    run_id: i64,
    source: &str,
    page: &Page<'_>,
) -> Result<PageReport> {
    // SQLite drops the temp schema when this setting changes; staging keeps nothing there.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let staged = (|| {
        let tx = conn.transaction()?;
        let report =
            stage_in(&tx, run_id, source, page).with_context(|| format!("staging {source}"))?;
        tx.commit()
            .with_context(|| format!("committing {source}"))?;
        Ok(report)
    })();
    conn.pragma_update(None, "temp_store", "DEFAULT")?;
    staged
}

fn stage_in(
    tx: &Transaction<'_>,
    run_id: i64,
    source: &str,
    page: &Page<'_>,
) -> Result<PageReport> {
    let page_spec = page.entity_set.as_deref().and_then(spec_for);
    // Set aside while a pull fills the table empty (`indexes`), when there is no index entry
    // for a new version to leave alone.
    let lookup_indexes_in_place = match page_spec {
        Some(spec) => tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1, 'main') WHERE \"unique\" = 0)",
            [spec.table],
            |r| r.get::<_, bool>(0),
        )?,
        None => false,
    };
    let mut counts = PageCounts::default();
    let mut rejections = Vec::new();
    let mut reject =
        |position: usize, entity_set: Option<&str>, reason: String, raw: &str| -> Result<()> {
            tx.execute(
                "INSERT INTO rejected_record (run_id, source, position, entity_set, reason, raw) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run_id,
                    source,
                    position as i64,
                    entity_set,
                    redact(&reason),
                    raw
                ],
            )?;
            rejections.push(Rejection {
                position,
                entity_set: entity_set.map(str::to_string),
                key: rejection_key(entity_set, raw),
                reason,
            });
            Ok(())
        };

    for (position, raw) in page.records.iter().enumerate() {
        let raw = raw.get();
        let record = match strict::value(raw) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                reject(
                    position,
                    page.entity_set.as_deref(),
                    format!("record is not a JSON object but {}", describe(&other)),
                    raw,
                )?;
                counts.rejected += 1;
                continue;
            }
            Err(err) => {
                reject(
                    position,
                    page.entity_set.as_deref(),
                    format!(
                        "unreadable record: {}",
                        page::strip_location(&err.to_string())
                    ),
                    raw,
                )?;
                counts.rejected += 1;
                continue;
            }
        };
        let record_context = record.get("@odata.context").and_then(Value::as_str);
        if let Some(deleted_set) = record_context.and_then(page::deleted_entity_set) {
            let set = deleted_set.or_else(|| page.entity_set.clone());
            let Some(spec) = set.as_deref().and_then(spec_for) else {
                let name = set.as_deref().unwrap_or("unknown");
                reject(
                    position,
                    set.as_deref(),
                    format!("deleted entity of entity set '{name}', which oppsync does not stage"),
                    raw,
                )?;
                counts.rejected += 1;
                continue;
            };
            match record.get("id").and_then(Value::as_str).and_then(guid) {
                Some(id) => {
                    let changed = tx
                        .prepare_cached(&spec.statements().delete)?
                        .execute(params![id, raw, source, run_id])?;
                    if changed == 0 {
                        counts.filtered += 1;
                    } else {
                        counts.deleted += 1;
                    }
                }
                _ => {
                    reject(
                        position,
                        Some(spec.entity_set),
                        format!(
                            "deleted entity without a GUID `id` (got {})",
                            record
                                .get("id")
                                .map_or_else(|| "none".to_string(), describe)
                        ),
                        raw,
                    )?;
                    counts.rejected += 1;
                }
            }
            continue;
        }
        let Some(spec) = page_spec else {
            counts.unknown += 1;
            continue;
        };
        match spec.extract(&record) {
            // Validated first, so that a malformed connection is rejected, not filtered.
            Ok(_) if spec.entity_set == "connections" && !touches_opportunity(&record) => {
                counts.filtered += 1;
            }
            Ok((key, values)) => {
                let mut bound: Vec<SqlValue> = Vec::with_capacity(2 * values.len() + 4);
                bound.push(SqlValue::Text(key));
                bound.extend(values.iter().map(|(v, _)| v.clone()));
                bound.extend(
                    values
                        .iter()
                        .map(|(_, present)| SqlValue::Integer(i64::from(*present))),
                );
                bound.push(SqlValue::Text(raw.to_string()));
                bound.push(SqlValue::Text(source.to_string()));
                bound.push(SqlValue::Integer(run_id));
                counts.upserted += 1;
                let written = if lookup_indexes_in_place {
                    stage_version(tx, spec, &bound)?
                } else {
                    // Without lookup indexes an upsert rewrites only the row and its key.
                    tx.prepare_cached(&spec.statements().upsert)?
                        .execute(params_from_iter(&bound))?
                };
                if written == 0 {
                    tx.prepare_cached(&spec.statements().seen)?
                        .execute(params![&bound[0], run_id])?;
                    counts.unchanged += 1;
                }
            }
            Err(reason) => {
                reject(position, Some(spec.entity_set), reason, raw)?;
                counts.rejected += 1;
            }
        }
    }

    // A page is reported as unknown when its records could not be attributed to a staged
    // entity set; deletes carrying their own entity set are staged either way.
    let status = if page_spec.is_none() && (counts.unknown > 0 || page.records.is_empty()) {
        "unknown_entity_set"
    } else {
        "staged"
    };
    tx.execute(
        "INSERT INTO staged_page (run_id, source, entity_set, status, upserted, deleted, rejected, staged_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run_id,
            source,
            page.entity_set,
            status,
            counts.upserted as i64,
            counts.deleted as i64,
            counts.rejected as i64,
            now()
        ],
    )?;
    Ok(PageReport {
        entity_set: page.entity_set.clone(),
        counts,
        rejections,
    })
}

/// `--full`: in each entity set pulled by this run, tombstones the live records no page of the
/// run carried. Returns how many were tombstoned per entity set.
pub(crate) fn sweep_missing(
    conn: &mut Connection,
    run_id: i64,
    pulled: &BTreeSet<&'static str>,
) -> Result<Vec<(&'static str, u64)>> {
    let tx = conn.transaction()?;
    let mut swept = Vec::new();
    for spec in SPECS.iter().filter(|spec| pulled.contains(spec.entity_set)) {
        let n = tx.execute(
            &format!(
                "UPDATE {table} SET deleted_run = ?1, deleted_reason = 'missing from full pull' \
                 WHERE seen_run <> ?1 AND deleted_run IS NULL",
                table = spec.table
            ),
            params![run_id],
        )?;
        swept.push((spec.entity_set, n as u64));
    }
    tx.commit()?;
    Ok(swept)
}

/// Where the next live pull of an entity set starts (`pull_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullState {
    pub mode: String,
    pub delta_link: Option<String>,
    pub watermark: Option<String>,
}

pub(crate) fn pull_state(conn: &Connection, entity_set: &str) -> Result<Option<PullState>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT mode, delta_link, watermark FROM pull_state WHERE entity_set = ?1",
            [entity_set],
            |r| {
                Ok(PullState {
                    mode: r.get(0)?,
                    delta_link: r.get(1)?,
                    watermark: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Records where the next pull starts; called only after the query's last page is staged.
pub(crate) fn save_pull_state(
    conn: &Connection,
    run_id: i64,
    entity_set: &str,
    state: &PullState,
) -> Result<()> {
    conn.execute(
        "INSERT INTO pull_state (entity_set, mode, delta_link, watermark, run_id, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (entity_set) DO UPDATE SET mode = excluded.mode, delta_link = excluded.delta_link,
             watermark = excluded.watermark, run_id = excluded.run_id, updated_at = excluded.updated_at",
        params![entity_set, state.mode, state.delta_link, state.watermark, run_id, now()],
    )?;
    Ok(())
}

/// The greatest `modifiedon` staged for an entity set.
pub(crate) fn max_modifiedon(conn: &Connection, spec: &EntitySpec) -> Result<Option<String>> {
    if !spec.has_modifiedon() {
        return Ok(None);
    }
    Ok(conn.query_row(
        &format!("SELECT max(modifiedon) FROM {}", spec.table),
        [],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
