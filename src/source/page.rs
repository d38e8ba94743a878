//! One Web API response page: its entity set and its records, each kept as the exact JSON text
//! received so that `raw` columns hold what Dynamics sent.
//!
//! Accepts collection pages (`{"@odata.context", "value": [...]}`, also `/$delta` pages and
//! pages with collection annotations) and single-record responses (`.../$entity`), as recorded
//! from real orgs. Annotations are optional everywhere.

use anyhow::{Result, anyhow};
use serde_json::value::RawValue;

use super::strict;

/// The entity sets oppsync stages.
pub(crate) const KNOWN_ENTITY_SETS: &[&str] = &[
    "opportunities",
    "accounts",
    "contacts",
    "connections",
    "connectionroles",
    "systemusers",
];

/// A parsed page. Records borrow the page text.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    /// From `@odata.context`, else the file name's leading word; `None` when neither says.
    pub entity_set: Option<String>,
    pub records: Vec<&'a RawValue>,
    /// `@odata.nextLink`: the next page of the same query, to be followed verbatim.
    pub next_link: Option<String>,
    /// `@odata.deltaLink`: on the last page of a change-tracking query, where the next one starts.
    pub delta_link: Option<String>,
}

/// Parses `text`, the body of `source`. `name_hint` is the file name used when the page has no
/// `@odata.context`. Invalid JSON is an error naming the source, line and column.
/// A UTF-8 byte-order mark at the start of the text is skipped (editors on Windows write one);
/// a key named twice in the page's top level is an error naming it.
pub(crate) fn parse<'a>(source: &str, text: &'a str, name_hint: Option<&str>) -> Result<Page<'a>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(anyhow!("{source}: the page is empty"));
    }
    let top = strict::object_members(text).map_err(|err| {
        let message = strip_location(&err.to_string()).to_string();
        if err.is_data() && message.starts_with("invalid type") {
            anyhow!("{source}: not a Web API page: the top level must be a JSON object")
        } else if err.is_data() {
            anyhow!(
                "{source}: at line {}, column {}: {message}",
                err.line(),
                err.column()
            )
        } else {
            anyhow!(
                "{source}: invalid JSON at line {}, column {}: {message}",
                err.line(),
                err.column()
            )
        }
    })?;
    let string = |key: &str| -> Result<Option<String>> {
        match top.get(key) {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
                Ok(value) => Ok(value),
                Err(_) => Err(anyhow!("{source}: `{key}` must be a string")),
            },
        }
    };
    let context = string("@odata.context")?;
    let next_link = string("@odata.nextLink")?;
    let delta_link = string("@odata.deltaLink")?;
    let entity_set = context
        .as_deref()
        .and_then(entity_set_from_context)
        .or_else(|| name_hint.and_then(entity_set_from_file_name));

    let records = match top.get("value") {
        Some(value) => serde_json::from_str::<Vec<&'a RawValue>>(value.get())
            .map_err(|_| anyhow!("{source}: `value` must be an array of records"))?,
        None if context.as_deref().is_some_and(|c| c.ends_with("/$entity")) => {
            // A single-record retrieve: the whole body is the record.
            vec![serde_json::from_str::<&'a RawValue>(text)?]
        }
        None => {
            return Err(anyhow!(
                "{source}: not a Web API page: no `value` array and not a single-record `$entity` response"
            ));
        }
    };
    Ok(Page {
        entity_set,
        records,
        next_link,
        delta_link,
    })
}

/// The entity set named after `$metadata#` in an `@odata.context` URL, e.g. `opportunities` in
/// `.../$metadata#opportunities(name,statecode)/$delta`.
pub(crate) fn entity_set_from_context(context: &str) -> Option<String> {
    let (_, after) = context.split_once("$metadata#")?;
    let name: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// The leading word of a file name, e.g. `opportunities` in `opportunities-page2.json`.
pub(crate) fn entity_set_from_file_name(file_name: &str) -> Option<String> {
    let name: String = file_name
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// Whether a record is a change-tracking delete (`@odata.context` ending in `$deletedEntity`).
pub(crate) fn deleted_entity_set(record_context: &str) -> Option<Option<String>> {
    record_context
        .ends_with("$deletedEntity")
        .then(|| entity_set_from_context(record_context))
}

/// serde_json appends " at line L column C"; the caller already says where.
pub(crate) fn strip_location(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/recorded");

    #[test]
    fn entity_set_comes_from_context_then_file_name() {
        let context =
            "https://x.crm.dynamics.com/api/data/v9.2/$metadata#opportunities(name)/$delta";
        assert_eq!(
            entity_set_from_context(context).as_deref(),
            Some("opportunities")
        );
        assert_eq!(
            entity_set_from_context("https://x/$metadata#connections").as_deref(),
            Some("connections")
        );
        assert_eq!(
            entity_set_from_file_name("accounts-2.json").as_deref(),
            Some("accounts")
        );
        let page = parse("f", r#"{"value": []}"#, Some("contacts_page1.json")).unwrap();
        assert_eq!(page.entity_set.as_deref(), Some("contacts"));
    }

    #[test]
    fn recorded_single_entity_response_is_one_record() {
        let text =
            std::fs::read_to_string(format!("{SAMPLES}/opportunity-entity-recorded.json")).unwrap();
        let page = parse("sample", &text, None).unwrap();
        assert_eq!(page.entity_set.as_deref(), Some("opportunities"));
        assert_eq!(page.records.len(), 1);
        assert!(
            page.records[0]
                .get()
                .contains("0faa41b7-4c85-ea11-a811-00224801badc")
        );
    }

    #[test]
    fn records_keep_their_exact_text() {
        let text = r#"{"value": [{"revenue": 20000.0000, "accountid": "A"}]}"#;
        let page = parse("f", text, Some("accounts.json")).unwrap();
        assert_eq!(
            page.records[0].get(),
            r#"{"revenue": 20000.0000, "accountid": "A"}"#
        );
    }

    #[test]
    fn invalid_json_names_source_line_and_column() {
        let err = parse("pages/x.json", "{\n  \"value\": [\n    {,}\n  ]\n}", None).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("pages/x.json: invalid JSON at line 3, column 6"),
            "{message}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_an_empty_page_is_named() {
        let page = parse(
            "f",
            "\u{feff}{\"value\": [{\"a\": 1}]}",
            Some("accounts.json"),
        )
        .unwrap();
        assert_eq!(page.records.len(), 1);
        let err = parse("f", " \n", None).unwrap_err();
        assert_eq!(format!("{err:#}"), "f: the page is empty");
    }

    #[test]
    fn a_link_named_twice_is_refused() {
        let text = r#"{"value": [], "@odata.nextLink": "https://a/api/data/v9.2/x", "@odata.nextLink": "https://b/"}"#;
        let err = parse("f", text, Some("accounts.json")).unwrap_err();
        assert!(
            format!("{err:#}").contains("`@odata.nextLink` appears twice"),
            "{err:#}"
        );
    }

    #[test]
    fn a_page_without_value_is_refused() {
        let err = parse(
            "f",
            r#"{"@odata.context": "https://x/$metadata#accounts"}"#,
            None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("no `value` array"));
        let err = parse("f", r#"[1, 2]"#, None).unwrap_err();
        assert!(format!("{err:#}").contains("top level must be a JSON object"));
    }

    #[test]
    fn delete_records_are_recognised_with_their_entity_set() {
        let context = "https://x/api/data/v9.2/$metadata#accounts/$deletedEntity";
        assert_eq!(
            deleted_entity_set(context),
            Some(Some("accounts".to_string()))
        );
        assert_eq!(
            deleted_entity_set("https://x/$metadata#accounts/$entity"),
            None
        );
    }
}
