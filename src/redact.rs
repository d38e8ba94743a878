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

/// What replaces a secret.
pub(crate) const MARK: &str = "<redacted>";

/// The forms of every registered secret that text may contain: as is, form- or URL-encoded, and
/// JSON-escaped.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers `secret` (and its encoded forms) for every later `redact`. Empty values are
/// ignored: there is nothing to hide, and cutting "" would mangle everything.
pub(crate) fn register(secret: &str) {
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
    // A poisoned lock only means another thread panicked mid-push; the list is still valid.
    let mut known = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !form.is_empty() && !known.contains(&form) {
            known.push(form);
        }
    }
    // Longest first, so that a secret containing another is cut whole.
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by `<redacted>`; borrowed when it holds none.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    let known = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut text = text.to_string();
    for secret in known.iter() {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), MARK);
        }
    }
    Cow::Owned(text)
}

/// Whether `text` holds a registered secret.
pub(crate) fn holds_secret(text: &str) -> bool {
    let known = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    known.iter().any(|s| text.contains(s.as_str()))
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

    #[test]
    fn text_without_secrets_is_borrowed_and_empty_secrets_are_ignored() {
        register("");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        assert!(!holds_secret("nothing here"));
    }

    #[test]
    fn a_secret_containing_another_is_cut_whole() {
        register("tok");
        register("tokLONGERtoken");
        assert_eq!(redact("a tokLONGERtoken b"), format!("a {MARK} b"));
    }
}
