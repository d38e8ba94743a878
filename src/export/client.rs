//! The Marketo REST client: bearer token from `/identity/oauth/token` (renewed before expiry and
//! on 601/602), the limiter, bounded retries, and a record of every call.
//!
//! Errors are classified here and nowhere else: 606 waits out the rate window, 615 and the
//! transient codes (604, 608, 611, 713, 502, 614, HTTP 5xx, network) back off exponentially
//! with jitter up to `max_attempts`; 607 is `Failure::DailyQuota`; a refusal of the request
//! itself (HTTP 400, 413, 422; 609, 1001, 1003 at request level), or a body that never got
//! an answer through every retry, is `Failure::Refused`, which push answers by isolating the
//! record at fault; anything else aborts with Marketo's code and message. The token and the
//! client secret never leave this module, and are registered with the redactor.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use super::limiter::Limiter;
use crate::config::MarketoConfig;
use crate::exit::usage;
use crate::net::{self, Backoff};

/// Renew the token when less than this is left (Adobe recommends renewing before expiry).
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Tokens live at most this long, whatever `expires_in` says: Marketo's last an hour, and a
/// huge value from a broken server must not overflow the clock arithmetic.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Marketo answers are small (300 results); anything this big is not Marketo.
const MAX_RESPONSE_BYTES: u64 = 32_000_000;

/// A failure push cannot retry its way out of.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 607: the daily quota is spent; the run stops cleanly and resumes next time.
    DailyQuota(String),
    /// This request body was refused at request level (HTTP 400, 413, 422; 609, 1001, 1003),
    /// or got no usable answer through every retry (`answered` false): the fault may
    /// lie with one record in it, which push isolates by splitting the batch.
    Refused { message: String, answered: bool },
    /// The instance cannot take what oppsync sends (1018: it runs Marketo's native CRM sync);
    /// a setup problem, exit 2.
    Setup(String),
    /// Anything else: the message says what Marketo answered.
    Fatal(String),
}

/// What 1018 means for oppsync.
pub(crate) const NATIVE_SYNC: &str = "this Marketo instance runs Marketo's native CRM sync (error 1018 \"CRM Integration enabled\"), which switches off the opportunity, company, role and sales person APIs oppsync writes; point marketo.base_url at an instance without it";

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::DailyQuota(message) => write!(
                f,
                "Marketo's daily API quota is spent (607 {message}); what was acknowledged is recorded, \
                 run push again after the quota resets (midnight US Central)"
            ),
            Failure::Refused { message, .. }
            | Failure::Setup(message)
            | Failure::Fatal(message) => f.write_str(message),
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

impl CallLog {
    /// Whether the call went to Marketo's REST API, which counts against the daily quota (the
    /// identity calls for a token do not).
    pub(crate) fn is_rest(&self) -> bool {
        self.path.starts_with("/rest")
    }

    /// How many of `calls` went to the REST API.
    pub(crate) fn rest_count(calls: &[CallLog]) -> usize {
        calls.iter().filter(|c| c.is_rest()).count()
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// Why the identity endpoint gave this client no token: its error line, and whether it was the
/// credentials (a usage error, exit 2).
struct NoToken {
    message: String,
    usage: bool,
}

impl NoToken {
    fn of(err: &anyhow::Error) -> NoToken {
        NoToken {
            message: format!("{err:#}"),
            usage: crate::exit::is_usage(err),
        }
    }

    fn error(&self) -> anyhow::Error {
        if self.usage {
            usage(self.message.clone())
        } else {
            Failure::Fatal(self.message.clone()).into()
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Done(Value),
    /// Worth another try after `wait`. `body_at_fault`: when retries run out, the body may be
    /// the cause (network errors, HTTP 5xx, unreadable answers), not the quota or Marketo's state.
    Retry {
        why: String,
        wait: Duration,
        body_at_fault: bool,
    },
    /// The request itself was refused: retrying the same body cannot help.
    Refused(String),
    Reauth(String),
    Fail(Failure),
}

/// What one request came to, with every HTTP call it took (retries and token fetches
/// included), for the caller to store.
pub(crate) struct Exchange {
    pub result: Result<Value>,
    pub calls: Vec<CallLog>,
}

/// The Marketo client. It is shared by the requests push keeps in flight: the token, the
/// limiter and the backoff's randomness are behind their own locks, held only briefly (the
/// token's while a new one is fetched, so that concurrent requests fetch it once).
pub(crate) struct MarketoClient {
    agent: ureq::Agent,
    base: String,
    client_id: String,
    client_secret: String,
    token: Mutex<Option<Token>>,
    /// Set when fetching a token failed, which ends the call that met it and the command with
    /// it: the requests waiting beside it for the token fail the same way without asking
    /// again (a refusing endpoint got five identity calls from a push's first describes, four
    /// in flight and one after). Guarded after `token`, by `ensure_token` alone.
    no_token: Mutex<Option<NoToken>>,
    limiter: Mutex<Limiter>,
    backoff: Mutex<Backoff>,
    max_attempts: u32,
    timeout: Duration,
}

/// A lock whose holder may have panicked still guards consistent data here (a token, a
/// window of timestamps, a random state).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
        let base = net::check_url(
            "marketo.base_url",
            config.base_url.as_deref().unwrap_or_default(),
        )?;
        let timeout = Duration::from_secs(config.http_timeout_secs);
        let agent = net::agent(timeout);
        if let Some(secret) = &config.client_secret {
            crate::redact::register(secret.expose());
        }
        Ok(MarketoClient {
            agent,
            base,
            client_id: config.client_id.clone().unwrap_or_default(),
            client_secret: config
                .client_secret
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
            token: Mutex::new(None),
            no_token: Mutex::new(None),
            limiter: Mutex::new(Limiter::new(
                config.rate_limit_calls,
                Duration::from_secs(config.rate_limit_window_secs),
            )),
            backoff: Mutex::new(Backoff::new(Duration::from_millis(config.retry_base_ms))),
            max_attempts: config.max_attempts,
            timeout,
        })
    }

    /// Has the limiter count the REST calls made `ages` ago by the commands before this one
    /// (`push::logged_call_ages`); before this client makes any.
    pub(crate) fn remember_calls(&self, ages: Vec<Duration>) {
        lock(&self.limiter).remember(Instant::now(), ages);
    }

    /// The instance and API user this client calls (as `describe::instance` gives them).
    pub(crate) fn instance(&self) -> (String, String) {
        (self.base.clone(), self.client_id.clone())
    }

    fn delay(&self, attempt: u32) -> Duration {
        lock(&self.backoff).delay(attempt)
    }

    /// Blocks until the limiter lets a call go, and counts it; fails with `Stopped`, the call
    /// not made, as soon as a stop is asked for during the wait (up to a window, 20 s).
    fn acquire(&self) -> Result<()> {
        loop {
            let wait = lock(&self.limiter).try_acquire(Instant::now());
            if wait.is_zero() {
                return Ok(());
            }
            if wait >= Duration::from_secs(1) {
                crate::progress::wait(&format!(
                    "rate limit: waiting {:.1} s for Marketo's window",
                    wait.as_secs_f64()
                ));
            }
            crate::stop::pause(wait)?;
        }
    }

    /// POSTs a JSON body of `records` records to `path` (under `/rest`), retrying as classified
    /// (at most `attempts` tries when given, fewer than configured), and returns Marketo's
    /// successful response body.
    pub(crate) fn post(
        &self,
        path: &str,
        body: &Value,
        records: usize,
        attempts: Option<u32>,
    ) -> Exchange {
        let mut calls = Vec::new();
        let result = self.call(
            "POST",
            path,
            Some(&body.to_string()),
            records,
            attempts,
            &mut calls,
        );
        Exchange { result, calls }
    }

    /// GETs `path` (under `/rest`), retrying as classified, and returns Marketo's successful
    /// response body.
    pub(crate) fn get(&self, path: &str) -> Exchange {
        let mut calls = Vec::new();
        let result = self.call("GET", path, None, 0, None, &mut calls);
        Exchange { result, calls }
    }

    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&str>,
        records: usize,
        attempts: Option<u32>,
        calls: &mut Vec<CallLog>,
    ) -> Result<Value> {
        let max_attempts = attempts.map_or(self.max_attempts, |n| n.min(self.max_attempts));
        let mut reauths = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.ensure_token(calls)?;
            self.acquire()?;
            let outcome = self.attempt(method, path, body, records, attempt, &token, calls);
            match outcome {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(Failure::Setup(message)) => return Err(usage(message)),
                Attempt::Fail(failure) => return Err(failure.into()),
                Attempt::Reauth(code) => {
                    // Forget this token, unless another request already replaced it.
                    let mut slot = lock(&self.token);
                    if slot.as_ref().is_some_and(|t| t.value == token) {
                        *slot = None;
                    }
                    drop(slot);
                    reauths += 1;
                    attempt -= 1;
                    if reauths > 3 {
                        return Err(Failure::Fatal(format!(
                            "Marketo keeps refusing fresh tokens ({code}) on {path}"
                        ))
                        .into());
                    }
                }
                Attempt::Refused(message) => {
                    return Err(Failure::Refused {
                        message,
                        answered: true,
                    }
                    .into());
                }
                Attempt::Retry {
                    why,
                    wait,
                    body_at_fault,
                } => {
                    if attempt >= max_attempts {
                        let message = format!("{path}: gave up after {attempt} attempts: {why}");
                        return Err(if body_at_fault {
                            Failure::Refused {
                                message,
                                answered: false,
                            }
                        } else {
                            Failure::Fatal(message)
                        }
                        .into());
                    }
                    crate::progress::wait(&format!(
                        "{path}: {why}; retrying in {:.1} s (attempt {} of {max_attempts})",
                        wait.as_secs_f64(),
                        attempt + 1
                    ));
                    // A stop ends the wait and the call: its records stay unacknowledged, and
                    // the next push sends them, as after any failed call.
                    crate::stop::pause(wait)?;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&str>,
        records: usize,
        attempt: u32,
        token: &str,
        calls: &mut Vec<CallLog>,
    ) -> Attempt {
        let url = format!("{}/rest{path}", self.base);
        let started = Instant::now();
        let authorization = format!("Bearer {token}");
        let response = match body {
            Some(body) => self
                .agent
                .post(&url)
                .header("Authorization", &authorization)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .send(body),
            None => self
                .agent
                .get(&url)
                .header("Authorization", &authorization)
                .header("Accept", "application/json")
                .call(),
        };
        let mut log = CallLog {
            method,
            path: format!("/rest{path}"),
            records,
            http_status: None,
            error_code: None,
            attempt,
            duration: Duration::ZERO,
        };
        let result = match response {
            Err(err) => {
                let err = net::transport_error(&err, self.timeout);
                log.error_code = Some(format!("network: {err}"));
                Attempt::Retry {
                    why: format!("network error: {err}"),
                    wait: self.delay(attempt),
                    body_at_fault: true,
                }
            }
            Ok(mut response) => {
                let status = response.status().as_u16();
                log.http_status = Some(status);
                match net::read_body(&mut response, MAX_RESPONSE_BYTES, self.timeout) {
                    Ok(text) => self.classify(path, status, &text, attempt, &mut log),
                    Err(why) => {
                        log.error_code = Some(format!("body: {why}"));
                        Attempt::Retry {
                            why: format!("HTTP {status}, but {why}"),
                            wait: self.delay(attempt),
                            body_at_fault: true,
                        }
                    }
                }
            }
        };
        log.duration = started.elapsed();
        calls.push(log);
        result
    }

    fn classify(
        &self,
        path: &str,
        status: u16,
        text: &str,
        attempt: u32,
        log: &mut CallLog,
    ) -> Attempt {
        if status >= 500 {
            return Attempt::Retry {
                why: format!("HTTP {status} ({})", net::describe_body(text)),
                wait: self.delay(attempt),
                body_at_fault: true,
            };
        }
        if (300..400).contains(&status) {
            return Attempt::Fail(Failure::Fatal(format!(
                "{path}: Marketo answered a redirect (HTTP {status}); oppsync follows none, check marketo.base_url"
            )));
        }
        if matches!(status, 400 | 413 | 422) {
            // The body as sent is refused (413: over 1 MB): another split may well go.
            return Attempt::Refused(format!(
                "{path}: HTTP {status}: {}",
                net::describe_body(text)
            ));
        }
        if status != 200 {
            // 401, 403, 404 and the like say nothing about the records: splitting the batch
            // would only spend calls.
            return Attempt::Fail(Failure::Fatal(format!(
                "{path}: HTTP {status}: {}",
                net::describe_body(text)
            )));
        }
        let Ok(body) = serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')) else {
            return Attempt::Retry {
                why: format!("the response is not JSON ({})", net::describe_body(text)),
                wait: self.delay(attempt),
                body_at_fault: true,
            };
        };
        match body.get("success") {
            Some(Value::Bool(true)) => return Attempt::Done(body),
            Some(Value::Bool(false)) => {}
            Some(_) | None => {
                return Attempt::Retry {
                    why: format!(
                        "the response has no boolean `success` ({})",
                        net::describe_body(text)
                    ),
                    wait: self.delay(attempt),
                    body_at_fault: true,
                };
            }
        }
        let Some(error) = body
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|errors| errors.first())
        else {
            return Attempt::Fail(Failure::Fatal(format!(
                "{path}: Marketo answered success=false without an errors array ({})",
                net::describe_body(text)
            )));
        };
        let code = error
            .get("code")
            .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
            .unwrap_or_default();
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_string();
        let code_shown = if code.is_empty() {
            "(no code)"
        } else {
            code.as_str()
        };
        log.error_code = Some(code.clone());
        match code.as_str() {
            "601" | "602" => Attempt::Reauth(code),
            "606" => Attempt::Retry {
                why: format!("606 {message}"),
                wait: lock(&self.limiter).window() / 4
                    + lock(&self.backoff).jitter(Duration::from_millis(250)),
                body_at_fault: false,
            },
            "615" | "604" | "608" | "611" | "713" | "502" | "614" => Attempt::Retry {
                why: format!("{code} {message}"),
                wait: self.delay(attempt),
                body_at_fault: false,
            },
            "607" => Attempt::Fail(Failure::DailyQuota(message)),
            "1018" => Attempt::Fail(Failure::Setup(format!("{path}: {NATIVE_SYNC}"))),
            // The body as sent was refused: invalid JSON, a value Marketo rejects for the whole
            // request, or (718) a sales person it does not know, which Marketo may report for
            // the whole call. Another record split apart from it may well go, and the one at
            // fault is skipped and sent again by the next push.
            "609" | "1001" | "1003" | "718" => {
                Attempt::Refused(format!("{path}: Marketo error {code}: {message}"))
            }
            _ => Attempt::Fail(Failure::Fatal(format!(
                "{path}: Marketo error {code_shown}: {message}"
            ))),
        }
    }

    /// A valid token: the current one, or a new one fetched while the others wait for it.
    fn ensure_token(&self, calls: &mut Vec<CallLog>) -> Result<String> {
        let mut slot = lock(&self.token);
        if let Some(token) = slot.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        if let Some(failed) = lock(&self.no_token).as_ref() {
            return Err(failed.error());
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
                let err = net::transport_error(&err, self.timeout);
                log.error_code = Some(format!("network: {err}"));
                Err(Failure::Fatal(format!("cannot reach Marketo at {}: {err}", self.base)).into())
            }
            Ok(mut response) => {
                let status = response.status().as_u16();
                log.http_status = Some(status);
                match net::read_body(&mut response, MAX_RESPONSE_BYTES, self.timeout) {
                    Ok(text) => self.accept_token(&mut slot, status, &text, started, &mut log),
                    Err(why) => Err(Failure::Fatal(format!(
                        "Marketo's identity endpoint answered HTTP {status}, but {why}"
                    ))
                    .into()),
                }
            }
        };
        log.duration = started.elapsed();
        calls.push(log);
        if let Err(err) = &outcome {
            *lock(&self.no_token) = Some(NoToken::of(err));
        }
        outcome
    }

    /// Takes the identity endpoint's answer: a token to use until shortly before it expires,
    /// or an error that says what came back instead.
    fn accept_token(
        &self,
        slot: &mut Option<Token>,
        status: u16,
        text: &str,
        started: Instant,
        log: &mut CallLog,
    ) -> Result<String> {
        let body: Value =
            serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap_or(Value::Null);
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .map_or_else(|| net::describe_body(text), str::to_string);
        match (status, body.get("access_token").and_then(Value::as_str)) {
            (200, Some(token)) if !token.trim().is_empty() => {
                let lifetime = net::token_lifetime(&body, MAX_TOKEN_LIFETIME);
                crate::redact::register_token(token, lifetime).map_err(|why| {
                    anyhow::Error::from(Failure::Fatal(format!(
                        "Marketo's identity endpoint answered {why}"
                    )))
                })?;
                // Renew a minute early, or halfway through a token that lives shorter.
                let margin = TOKEN_MARGIN.min(lifetime / 2);
                *slot = Some(Token {
                    value: token.to_string(),
                    renew_at: started
                        .checked_add(lifetime - margin)
                        .unwrap_or_else(Instant::now),
                });
                Ok(token.to_string())
            }
            (200, _) => Err(Failure::Fatal(format!(
                "Marketo's identity endpoint answered HTTP 200 without an access_token ({})",
                net::describe_body(text)
            ))
            .into()),
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
                "Marketo's identity endpoint answered HTTP {status}: {description}"
            ))
            .into()),
        }
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
