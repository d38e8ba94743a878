//! What both HTTP clients (Marketo's REST API, Dataverse's Web API) share: the agent, the rule
//! that keeps secrets off plain-HTTP networks, and exponential backoff with jitter.

use std::time::Duration;

use anyhow::Result;

use crate::exit::usage;

/// No single backoff is longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Sync Leads may take 90 s at Marketo; nothing takes longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A blocking agent that returns 4xx and 5xx responses instead of errors, so that callers can
/// read the body and classify the failure themselves.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .user_agent(concat!("oppsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Marketo, Dataverse and Entra ID are HTTPS; plain HTTP is allowed only to this machine (the
/// simulators), so that a secret never crosses a network in clear.
pub(crate) fn check_url(setting: &str, url: &str) -> Result<()> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(usage(format!("{setting} {url} is not a URL")));
    };
    let host = if rest.starts_with('[') {
        rest.split(']')
            .next()
            .map_or("", |h| h.trim_start_matches('['))
    } else {
        rest.split(['/', ':']).next().unwrap_or("")
    };
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => Ok(()),
        "http" => Err(usage(format!(
            "{setting} {url}: plain http is allowed only to 127.0.0.1; use https"
        ))),
        _ => Err(usage(format!(
            "{setting} {url}: unsupported scheme {scheme}"
        ))),
    }
}

/// `text` with every non-empty secret cut out: error texts from the HTTP layer may quote a
/// URL or a form, and nothing a client keeps or shows may carry a secret.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |text, secret| {
            text.replace(secret, "<redacted>")
        })
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
        assert!(check_url("x", "https://123-ABC-456.mktorest.com").is_ok());
        assert!(check_url("x", "http://127.0.0.1:8080").is_ok());
        assert!(check_url("x", "http://[::1]:8080/api").is_ok());
        assert!(check_url("x", "http://localhost").is_ok());
        assert!(check_url("x", "http://123-ABC-456.mktorest.com").is_err());
        assert!(check_url("x", "http://127.0.0.1.example.com").is_err());
        assert!(check_url("x", "123-ABC-456.mktorest.com").is_err());
        assert!(check_url("x", "ftp://127.0.0.1").is_err());
    }

    #[test]
    fn redact_cuts_every_secret_and_ignores_empty_ones() {
        assert_eq!(
            redact("a=s3cret&b=pw&c=x", &["s3cret", "", "pw"]),
            "a=<redacted>&b=<redacted>&c=x"
        );
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
