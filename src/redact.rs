//! Every secret this process knows, and the one function that cuts them out of text before it
//! is printed or stored.
//!
//! Configured secrets (client secrets, the ROPC password) are registered when the configuration
//! is loaded; access tokens when a server hands them out. Any text that may carry what a server
//! sent back (error messages, record-level reasons, warnings, staged pages) passes through
//! `redact` on its way to the terminal or the database, so a server that quotes a secret or a
//! token cannot make oppsync leak it. The registry is process-wide on purpose: the sinks (main's
//! error line, the `run` row, `api_call`, `push_outcome`, `rejected_record`) are far from the
//! clients that learn the secrets, and threading a redactor through every layer would leave one
//! forgotten path sooner or later.

use std::borrow::Cow;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// What replaces a secret.
pub(crate) const MARK: &str = "<redacted>";

/// How long past its expiry a token is still cut: a server's clock, or its answer, may lag.
const TOKEN_GRACE: Duration = Duration::from_secs(15 * 60);
/// How long a token whose lifetime the server did not say is cut (the longest oppsync accepts).
const UNKNOWN_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One form of a registered secret: as is, form- or URL-encoded, or JSON-escaped.
struct Form {
    text: String,
    /// When a token's form may be forgotten; `None` for a configured secret, kept for good.
    until: Option<Instant>,
}

/// The fewest characters a secret may have. Every secret is cut out of all that is printed and
/// stored, so a shorter one would cut ordinary text too: a client secret `y` turns "every" into
/// "ever<redacted>" in every line and every reason stored, and in the strings of every JSON
/// (`json`). No real secret is this short (Marketo's client secrets have 32 characters, Entra
/// ID's 40 and its passwords at least 8; access tokens have dozens), so the configuration
/// refuses a shorter one as a bad setting and `register_token` a shorter token, which the
/// clients take as a server's garbage, before sending anything with it.
pub(crate) const SHORTEST_SECRET: usize = 8;

/// Whether `secret` is too short to be one (`SHORTEST_SECRET`), spaces around it not counted.
pub(crate) fn too_short(secret: &str) -> bool {
    secret.trim().chars().count() < SHORTEST_SECRET
}

/// How many characters `secret` has, spaces around it not counted, for an error that refuses
/// it without showing it: "1 character", "7 characters".
pub(crate) fn characters(secret: &str) -> String {
    match secret.trim().chars().count() {
        1 => "1 character".to_string(),
        n => format!("{n} characters"),
    }
}

/// The forms of every registered secret that text may contain, longest first.
static SECRETS: RwLock<Vec<Form>> = RwLock::new(Vec::new());

/// Remembers `secret` (and its encoded forms) for every later `redact`. Empty values are
/// ignored: there is nothing to hide, and cutting "" would mangle everything.
pub(crate) fn register(secret: &str) {
    add(&mut known_mut(), secret, None, Instant::now());
}

/// Remembers an access token for as long as it is valid (`lifetime`, or a day when the server
/// did not say), and a margin. Expired tokens are forgotten as new ones come: a `sync --every`
/// process fetches a token or two per cycle, and kept for good they would make every `redact`
/// (every staged page, every line) slower day after day. A token too short to be one
/// (`SHORTEST_SECRET`) is not remembered: the error says what the server answered, for the
/// client to refuse it with, naming the server.
pub(crate) fn register_token(token: &str, lifetime: Duration) -> Result<(), String> {
    if too_short(token) {
        return Err(format!(
            "an access_token of {}, too few characters to be one: a token is cut out of all that \
             oppsync prints and stores, and one this short would cut ordinary text",
            characters(token)
        ));
    }
    let now = Instant::now();
    let lifetime = if lifetime.is_zero() {
        UNKNOWN_TOKEN_LIFETIME
    } else {
        lifetime
    };
    add(
        &mut known_mut(),
        token,
        now.checked_add(lifetime + TOKEN_GRACE),
        now,
    );
    Ok(())
}

fn known_mut() -> std::sync::RwLockWriteGuard<'static, Vec<Form>> {
    // A poisoned lock only means another thread panicked mid-push; the list is still valid.
    SECRETS.write().unwrap_or_else(|e| e.into_inner())
}

/// Adds the forms of `secret` to `known`, to be kept `until` (for good when `None`), and drops
/// the tokens' forms whose time is past at `now`.
fn add(known: &mut Vec<Form>, secret: &str, until: Option<Instant>, now: Instant) {
    known.retain(|form| form.until.is_none_or(|until| until > now));
    if secret.is_empty() {
        return;
    }
    let forms = [
        secret.to_string(),
        percent_encode(secret),
        serde_json::to_string(secret)
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_default(),
    ];
    for text in forms {
        if text.is_empty() {
            continue;
        }
        match known.iter_mut().find(|form| form.text == text) {
            // Kept as long as its longest registration asks.
            Some(form) => {
                form.until = match (form.until, until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                }
            }
            None => known.push(Form { text, until }),
        }
    }
    // Longest first, so that a secret containing another is cut whole.
    known.sort_by_key(|form| std::cmp::Reverse(form.text.len()));
}

/// `text` with every registered secret replaced by `<redacted>`; borrowed when it holds none.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    let known = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|form| text.contains(form.text.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut text = text.to_string();
    for form in known.iter() {
        if text.contains(form.text.as_str()) {
            text = text.replace(form.text.as_str(), MARK);
        }
    }
    Cow::Owned(text)
}

/// `value` as JSON text with every registered secret cut out of its strings and keys. Cut out
/// of the text instead, a secret that spells JSON (a server may hand out the token `"calls":`)
/// would leave it broken: `run.counts` unreadable to `json_extract`, a `--json` result no
/// parser takes. Only the strings are cut, so the text stays JSON; what a secret might still
/// match between them is this process's own punctuation, key names and numbers, none of which
/// a server wrote.
pub(crate) fn json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if !holds_secret(&text) {
        return text;
    }
    cut_strings(value).to_string()
}

fn cut_strings(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(redact(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(cut_strings).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, member)| (redact(key).into_owned(), cut_strings(member)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether `text` holds a registered secret.
pub(crate) fn holds_secret(text: &str) -> bool {
    let known = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    known.iter().any(|form| text.contains(form.text.as_str()))
}

/// `application/x-www-form-urlencoded` and URL query encoding of `text` (RFC 3986 unreserved
/// characters kept), which is how a server quoting a request's form or query would show it.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_cut_in_every_form() {
        register("s3cr+t/\"value\"");
        let text = "echo: s3cr+t/\"value\" form: s3cr%2Bt%2F%22value%22 json: s3cr+t/\\\"value\\\"";
        let redacted = redact(text);
        assert!(!redacted.contains("s3cr"), "{redacted}");
        assert_eq!(redacted.matches(MARK).count(), 3, "{redacted}");
    }

    /// A secret that spells JSON is cut out of the strings and keys a server may have written,
    /// and the text stays JSON; cut out of the text, it would have taken the key's quotes.
    #[test]
    fn a_secret_that_spells_json_is_cut_from_strings_and_leaves_json() {
        register("\"spelled-key\":");
        let value = serde_json::json!({
            "spelled-key": 3,
            "message": "Marketo quoted \"spelled-key\": here",
            "\"spelled-key\":field": [true, "\"spelled-key\":"],
        });
        assert!(
            redact(&value.to_string())
                .parse::<serde_json::Value>()
                .is_err()
        );
        let cut: serde_json::Value = json(&value).parse().unwrap();
        assert_eq!(
            cut,
            serde_json::json!({
                "spelled-key": 3,
                "message": "Marketo quoted <redacted> here",
                "<redacted>field": [true, "<redacted>"],
            })
        );
        let plain = serde_json::json!({"calls": 2});
        assert_eq!(json(&plain), plain.to_string());
    }

    #[test]
    fn text_without_secrets_is_borrowed_and_empty_secrets_are_ignored() {
        register("");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        assert!(!holds_secret("nothing here"));
    }

    #[test]
    fn tokens_are_forgotten_once_expired_and_configured_secrets_never() {
        let start = Instant::now();
        let later = |secs| start + Duration::from_secs(secs);
        let mut known = Vec::new();
        add(&mut known, "configured-secret", None, start);
        add(&mut known, "token-one", Some(later(3600)), start);
        // The same token handed out again lives as long as its longest registration.
        add(&mut known, "token-one", Some(later(5400)), later(60));
        add(&mut known, "token-two", Some(later(7200)), later(1800));
        let texts = |known: &[Form]| -> Vec<String> {
            let mut texts: Vec<String> = known.iter().map(|f| f.text.clone()).collect();
            texts.sort();
            texts
        };
        assert_eq!(
            texts(&known),
            ["configured-secret", "token-one", "token-two"]
        );
        // A day of cycles, a new token every five minutes, each valid for an hour: only the
        // tokens still valid (and the configured secret) are kept.
        for cycle in 0..288u64 {
            let now = later(7200 + cycle * 300);
            add(
                &mut known,
                &format!("token-{cycle}"),
                Some(now + Duration::from_secs(3600)),
                now,
            );
        }
        assert!(known.len() <= 14, "{} forms kept", known.len());
        assert!(known.iter().any(|f| f.text == "configured-secret"));
        assert!(known.iter().any(|f| f.text == "token-287"));
        assert!(
            !known
                .iter()
                .any(|f| f.text == "token-one" || f.text == "token-0")
        );
        // Configured once, then seen as a token too: kept for good.
        add(&mut known, "both", None, later(90_000));
        add(&mut known, "both", Some(later(90_001)), later(90_000));
        add(&mut known, "x", None, later(100_000));
        assert!(known.iter().any(|f| f.text == "both"));
    }

    #[test]
    fn a_secret_containing_another_is_cut_whole() {
        register("tok");
        register("tokLONGERtoken");
        assert_eq!(redact("a tokLONGERtoken b"), format!("a {MARK} b"));
    }
}
