//! What both HTTP clients (Marketo's REST API, Dataverse's Web API) share: the agent, the rule
//! that keeps secrets off plain-HTTP networks and away from hosts named by anyone but the
//! operator, reading a response body within a size limit, and exponential backoff with jitter.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use ureq::http::Uri;

use crate::exit::usage;

/// No single backoff is longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A blocking agent that returns 4xx and 5xx responses instead of errors, so that callers can
/// read the body and classify the failure themselves. It follows no redirect: neither Marketo
/// nor Dataverse needs one, and a redirect is a server naming a host the operator did not.
/// `timeout` bounds a whole call, body included, so a server that trickles cannot hold a run.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("oppsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The origin (scheme, host, port) and path of a URL, parsed by the same parser ureq sends
/// with, so that what is checked is what is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub scheme: String,
    /// Lower-cased; IPv6 addresses keep their brackets.
    pub host: String,
    /// The explicit port, or the scheme's default.
    pub port: u16,
    pub path: String,
}

impl Target {
    /// Parses `url`; `None` when it is not an absolute http(s) URL or names user info.
    pub(crate) fn parse(url: &str) -> Option<Target> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        Some(Target {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(default_port),
            path: uri.path().to_string(),
        })
    }

    /// Whether the host is this machine: `localhost` or a loopback address (127.0.0.0/8, ::1).
    pub(crate) fn is_loopback(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        self.host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether `other` has the same scheme, host and port.
    pub(crate) fn same_origin(&self, other: &Target) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

/// Checks a configured URL and returns it without a trailing slash. Marketo, Dataverse and Entra
/// ID are HTTPS; plain HTTP is allowed only to this machine (the simulators), so that a secret
/// never crosses a network in clear. User info (`user:pass@host`) is refused outright: it is
/// how a URL that reads like one host sends to another.
pub(crate) fn check_url(setting: &str, url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(usage(format!("{setting} {url} is not a URL")));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(usage(format!(
            "{setting} {url}: unsupported scheme {scheme}; use https"
        )));
    }
    if url.parse::<Uri>().is_ok_and(|uri| {
        uri.authority()
            .is_some_and(|authority| authority.as_str().contains('@'))
    }) {
        return Err(usage(format!(
            "{setting}: user info (user@host) is not allowed in the URL; give the host alone and credentials in their own settings"
        )));
    }
    let Some(target) = Target::parse(url) else {
        return Err(usage(format!("{setting} {url} is not a valid URL")));
    };
    if url.contains(['?', '#']) {
        return Err(usage(format!(
            "{setting} {url}: a query or fragment is not allowed in a base URL"
        )));
    }
    if target.scheme == "http" && !target.is_loopback() {
        return Err(usage(format!(
            "{setting} {url}: plain http is allowed only to this machine (127.0.0.1, localhost, ::1); use https"
        )));
    }
    Ok(url.to_string())
}

/// Reads a response body as text, within `limit` bytes. The error says what happened (timed
/// out after the call's time limit, too large, not UTF-8, connection dropped) in one line.
pub(crate) fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
    timeout: Duration,
) -> std::result::Result<String, String> {
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|err| match err {
            ureq::Error::Timeout(_) => format!(
                "timed out reading the response after {} s",
                timeout.as_secs()
            ),
            ureq::Error::BodyExceedsLimit(limit) => {
                format!("the response is larger than {} MB", limit / 1_000_000)
            }
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => format!(
                "timed out reading the response after {} s",
                timeout.as_secs()
            ),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                "the response is not valid UTF-8".to_string()
            }
            other => format!("reading the response failed: {other}"),
        })
}

/// A transport error (no response) in one line, saying a timeout is one.
pub(crate) fn transport_error(err: &ureq::Error, timeout: Duration) -> String {
    match err {
        ureq::Error::Timeout(_) => format!("no complete answer within {} s", timeout.as_secs()),
        other => other.to_string(),
    }
}

/// The lifetime a token response gives its token: `expires_in` as a number (OAuth 2, Entra v2,
/// Marketo) or a string (Entra v1), capped at `max` so that a huge value cannot overflow the
/// clock arithmetic; zero (renew before every use) when it is missing or unreadable.
pub(crate) fn token_lifetime(body: &serde_json::Value, max: Duration) -> Duration {
    use serde_json::Value;
    let seconds = match body.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    seconds.map_or(Duration::ZERO, |secs| {
        Duration::from_secs(secs.min(max.as_secs()))
    })
}

/// A few words on a body that could not be used: what it starts with, or that it is empty.
pub(crate) fn describe_body(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "the body is empty".to_string();
    }
    let shown: String = trimmed.chars().take(120).collect();
    let shown = shown.replace(['\n', '\r'], " ");
    if shown.len() < trimmed.len() {
        format!("the body starts: {shown}…")
    } else {
        format!("the body: {shown}")
    }
}

/// Exponential backoff from `base`, doubling per attempt up to 30 s, with full jitter over the
/// upper half so that retries from several clients spread out.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        Backoff {
            base,
            rng: seed | 1,
        }
    }

    /// How long to wait after the `attempt`th failure (1-based).
    pub(crate) fn delay(&mut self, attempt: u32) -> Duration {
        let capped = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        capped / 2 + self.jitter(capped / 2)
    }

    /// A random duration below `up_to` (xorshift: enough for spreading retries).
    pub(crate) fn jitter(&mut self, up_to: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let millis = up_to.as_millis() as u64;
        if millis == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(self.rng % millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_unless_loopback() {
        for ok in [
            "https://123-ABC-456.mktorest.com",
            "https://123-ABC-456.mktorest.com/",
            "http://127.0.0.1:8080",
            "http://127.0.0.2:8080",
            "http://[::1]:8080/api",
            "http://localhost",
            "HTTP://LOCALHOST:1",
        ] {
            assert!(check_url("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://123-ABC-456.mktorest.com",
            "http://127.0.0.1.example.invalid",
            "123-ABC-456.mktorest.com",
            "ftp://127.0.0.1",
            "http://10.0.0.1",
            "http://[::ffff:10.1.2.3]:80",
            "https://host.invalid/rest?x=1",
            "http://127.0.0.1\\@host.invalid",
        ] {
            let err = check_url("x", bad).unwrap_err();
            assert!(crate::exit::is_usage(&err), "{bad}");
        }
        assert_eq!(
            check_url("x", "https://h.invalid/").unwrap(),
            "https://h.invalid"
        );
    }

    #[test]
    fn user_info_is_refused_even_when_it_reads_like_a_loopback_host() {
        for url in [
            "http://127.0.0.1:1@host.invalid:18080",
            "https://user:pass@host.invalid",
            "http://127.0.0.1@127.0.0.1",
        ] {
            let err = check_url("marketo.base_url", url).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains("user info"), "{url}: {message}");
            assert!(!message.contains("pass"), "{message}");
        }
    }

    #[test]
    fn targets_compare_by_scheme_host_and_default_port() {
        let org = Target::parse("https://Contoso.crm.dynamics.com/api/data/v9.2").unwrap();
        let same = Target::parse("https://contoso.crm.dynamics.com:443/api/data/v9.2/x").unwrap();
        assert!(org.same_origin(&same));
        for other in [
            "http://contoso.crm.dynamics.com/api/data/v9.2",
            "https://contoso.crm.dynamics.com:444/api/data/v9.2",
            "https://contoso.crm.dynamics.com.invalid/api/data/v9.2",
        ] {
            assert!(!org.same_origin(&Target::parse(other).unwrap()), "{other}");
        }
        assert!(Target::parse("https://u@contoso.crm.dynamics.com/").is_none());
    }

    #[test]
    fn token_lifetimes_are_read_from_numbers_or_strings_and_capped() {
        use serde_json::json;
        let max = Duration::from_secs(86_400);
        let cases = [
            (json!({"expires_in": 3599}), 3599),
            (json!({"expires_in": "3599"}), 3599),
            (json!({"expires_in": u64::MAX}), 86_400),
            (json!({"expires_in": "18446744073709551616"}), 0),
            (json!({"expires_in": -5}), 0),
            (json!({"expires_in": 1e300}), 0),
            (json!({}), 0),
        ];
        for (body, secs) in cases {
            assert_eq!(
                token_lifetime(&body, max),
                Duration::from_secs(secs),
                "{body}"
            );
        }
    }

    #[test]
    fn describe_body_says_empty_or_shows_the_start() {
        assert_eq!(describe_body("  \n"), "the body is empty");
        assert_eq!(describe_body("<html>"), "the body: <html>");
        assert!(describe_body(&"x".repeat(500)).ends_with('…'));
    }

    #[test]
    fn backoff_doubles_stays_in_the_upper_half_and_is_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(1000));
        for (attempt, full) in [(1, 1000), (2, 2000), (3, 4000), (10, 30_000)] {
            let delay = backoff.delay(attempt).as_millis() as u64;
            assert!(
                (full / 2..full).contains(&delay),
                "attempt {attempt}: {delay} ms"
            );
        }
    }
}
