//! The Marketo REST client: bearer token from `/identity/oauth/token` (renewed before expiry and
//! on 601/602), the limiter, bounded retries, and a record of every call.
//!
//! Errors are classified here and nowhere else: 606 waits out the rate window, 615 and the
//! transient codes (604, 608, 611, 713, 502, 614, HTTP 5xx, network) back off exponentially
//! with jitter up to `max_attempts`; 607 is `Failure::DailyQuota`; anything else aborts with
//! Marketo's code and message. The token and the client secret never leave this module.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use super::limiter::Limiter;
use crate::config::MarketoConfig;
use crate::exit::usage;
use crate::net::{self, Backoff};

/// Renew the token when less than this is left (Adobe recommends renewing before expiry).
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// A failure push cannot retry its way out of.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 607: the daily quota is spent; the run stops cleanly and resumes next time.
    DailyQuota(String),
    /// Anything else: the message says what Marketo answered.
    Fatal(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::DailyQuota(message) => write!(
                f,
                "Marketo's daily API quota is spent (607 {message}); what was acknowledged is recorded, \
                 run push again after the quota resets (midnight US Central)"
            ),
            Failure::Fatal(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

/// One HTTP call as recorded in `api_call`.
#[derive(Debug, Clone)]
pub(crate) struct CallLog {
    pub method: &'static str,
    pub path: String,
    pub records: usize,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub attempt: u32,
    pub duration: Duration,
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// What one attempt came to.
enum Attempt {
    Done(Value),
    Retry { why: String, wait: Duration },
    Reauth(String),
    Fail(Failure),
}

pub(crate) struct MarketoClient {
    agent: ureq::Agent,
    base: String,
    client_id: String,
    client_secret: String,
    token: Option<Token>,
    limiter: Limiter,
    backoff: Backoff,
    max_attempts: u32,
    /// Every call made, for the caller to store; drained with `take_calls`.
    calls: Vec<CallLog>,
}

impl MarketoClient {
    /// Checks the `[marketo]` settings (usage errors name what is missing) and builds the client.
    pub(crate) fn new(config: &MarketoConfig) -> Result<MarketoClient> {
        let mut missing = Vec::new();
        if config.base_url.as_deref().is_none_or(str::is_empty) {
            missing.push("marketo.base_url (MARKETO_BASE_URL)");
        }
        if config.client_id.as_deref().is_none_or(str::is_empty) {
            missing.push("marketo.client_id (MARKETO_CLIENT_ID)");
        }
        if config
            .client_secret
            .as_ref()
            .is_none_or(|s| s.expose().is_empty())
        {
            missing.push("marketo.client_secret (MARKETO_CLIENT_SECRET)");
        }
        if !missing.is_empty() {
            return Err(usage(format!(
                "push needs these Marketo settings: {}",
                missing.join(", ")
            )));
        }
        let base = config
            .base_url
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        net::check_url("marketo.base_url", &base)?;
        let agent = net::agent();
        Ok(MarketoClient {
            agent,
            base,
            client_id: config.client_id.clone().unwrap_or_default(),
            client_secret: config
                .client_secret
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
            token: None,
            limiter: Limiter::new(
                config.rate_limit_calls,
                Duration::from_secs(config.rate_limit_window_secs),
            ),
            backoff: Backoff::new(Duration::from_millis(config.retry_base_ms)),
            max_attempts: config.max_attempts,
            calls: Vec::new(),
        })
    }

    /// The calls made since the last `take_calls`.
    pub(crate) fn take_calls(&mut self) -> Vec<CallLog> {
        std::mem::take(&mut self.calls)
    }

    /// POSTs a JSON body of `records` records to `path` (under `/rest`), retrying as classified,
    /// and returns Marketo's successful response body.
    pub(crate) fn post(&mut self, path: &str, body: &Value, records: usize) -> Result<Value> {
        let text = body.to_string();
        let mut reauths = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.ensure_token()?;
            self.limiter.acquire();
            let outcome = self.attempt(path, &text, records, attempt);
            match outcome {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(failure) => return Err(failure.into()),
                Attempt::Reauth(code) => {
                    self.token = None;
                    reauths += 1;
                    attempt -= 1;
                    if reauths > 3 {
                        return Err(Failure::Fatal(format!(
                            "Marketo keeps refusing fresh tokens ({code}) on {path}"
                        ))
                        .into());
                    }
                }
                Attempt::Retry { why, wait } => {
                    if attempt >= self.max_attempts {
                        return Err(Failure::Fatal(format!(
                            "{path}: gave up after {attempt} attempts: {why}"
                        ))
                        .into());
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn attempt(&mut self, path: &str, body: &str, records: usize, attempt: u32) -> Attempt {
        let url = format!("{}/rest{path}", self.base);
        let token = self
            .token
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let started = Instant::now();
        let response = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .send(body);
        let mut log = CallLog {
            method: "POST",
            path: format!("/rest{path}"),
            records,
            http_status: None,
            error_code: None,
            attempt,
            duration: Duration::ZERO,
        };
        let result = match response {
            Err(err) => {
                let err = self.redact(&err.to_string());
                log.error_code = Some(format!("network: {err}"));
                Attempt::Retry {
                    why: format!("network error: {err}"),
                    wait: self.backoff.delay(attempt),
                }
            }
            Ok(mut response) => {
                let status = response.status().as_u16();
                log.http_status = Some(status);
                let text = response.body_mut().read_to_string().unwrap_or_default();
                self.classify(path, status, &text, attempt, &mut log)
            }
        };
        log.duration = started.elapsed();
        self.calls.push(log);
        result
    }

    fn classify(
        &mut self,
        path: &str,
        status: u16,
        text: &str,
        attempt: u32,
        log: &mut CallLog,
    ) -> Attempt {
        if status >= 500 {
            return Attempt::Retry {
                why: format!("HTTP {status}"),
                wait: self.backoff.delay(attempt),
            };
        }
        if status != 200 {
            let detail: String = text.chars().take(200).collect();
            return Attempt::Fail(Failure::Fatal(format!("{path}: HTTP {status}: {detail}")));
        }
        let Ok(body) = serde_json::from_str::<Value>(text) else {
            return Attempt::Retry {
                why: "response is not JSON".into(),
                wait: self.backoff.delay(attempt),
            };
        };
        if body.get("success").and_then(Value::as_bool) == Some(true) {
            return Attempt::Done(body);
        }
        let error = body.get("errors").and_then(|e| e.get(0));
        let code = error
            .and_then(|e| e.get("code"))
            .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
            .unwrap_or_default();
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        log.error_code = Some(code.clone());
        match code.as_str() {
            "601" | "602" => Attempt::Reauth(code),
            "606" => Attempt::Retry {
                why: format!("606 {message}"),
                wait: self.limiter.window() / 4 + self.backoff.jitter(Duration::from_millis(250)),
            },
            "615" | "604" | "608" | "611" | "713" | "502" | "614" => Attempt::Retry {
                why: format!("{code} {message}"),
                wait: self.backoff.delay(attempt),
            },
            "607" => Attempt::Fail(Failure::DailyQuota(message)),
            _ => Attempt::Fail(Failure::Fatal(format!(
                "{path}: Marketo error {code}: {message}"
            ))),
        }
    }

    fn ensure_token(&mut self) -> Result<()> {
        if self
            .token
            .as_ref()
            .is_some_and(|t| Instant::now() < t.renew_at)
        {
            return Ok(());
        }
        let url = format!("{}/identity/oauth/token", self.base);
        let started = Instant::now();
        let response = self
            .agent
            .get(&url)
            .query("grant_type", "client_credentials")
            .query("client_id", &self.client_id)
            .query("client_secret", &self.client_secret)
            .call();
        let mut log = CallLog {
            method: "GET",
            path: "/identity/oauth/token".into(),
            records: 0,
            http_status: None,
            error_code: None,
            attempt: 1,
            duration: Duration::ZERO,
        };
        let outcome = match response {
            Err(err) => {
                let err = self.redact(&err.to_string());
                log.error_code = Some(format!("network: {err}"));
                Err(Failure::Fatal(format!("cannot reach Marketo at {}: {err}", self.base)).into())
            }
            Ok(mut response) => {
                let status = response.status().as_u16();
                log.http_status = Some(status);
                let body: Value =
                    serde_json::from_str(&response.body_mut().read_to_string().unwrap_or_default())
                        .unwrap_or(Value::Null);
                let description = body
                    .get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match (status, body.get("access_token").and_then(Value::as_str)) {
                    (200, Some(token)) => {
                        let expires_in = match body.get("expires_in") {
                            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                            Some(Value::String(s)) => s.parse().unwrap_or(0),
                            _ => 0,
                        };
                        let lifetime = Duration::from_secs(expires_in);
                        // Renew a minute early, or halfway through a token that lives shorter.
                        let margin = TOKEN_MARGIN.min(lifetime / 2);
                        self.token = Some(Token {
                            value: token.to_string(),
                            renew_at: started + lifetime - margin,
                        });
                        Ok(())
                    }
                    (401, _) => {
                        log.error_code = body
                            .get("error")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        Err(usage(format!(
                            "Marketo refused the credentials of marketo.client_id {}: {description}",
                            self.client_id
                        )))
                    }
                    (status, _) => Err(Failure::Fatal(format!(
                        "Marketo identity endpoint answered HTTP {status}: {description}"
                    ))
                    .into()),
                }
            }
        };
        log.duration = started.elapsed();
        self.calls.push(log);
        outcome
    }

    /// Error texts from the HTTP layer may quote the identity URL and its query; the secret
    /// never leaves this module, so it is cut out of anything kept or shown.
    fn redact(&self, text: &str) -> String {
        net::redact(text, &[&self.client_secret])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_are_named() {
        let err = MarketoClient::new(&MarketoConfig::default()).err().unwrap();
        let message = format!("{err:#}");
        assert!(crate::exit::is_usage(&err));
        for name in [
            "marketo.base_url",
            "marketo.client_id",
            "marketo.client_secret",
        ] {
            assert!(message.contains(name), "{message}");
        }
    }
}
