//! The Dataverse Web API: `GET /api/data/v9.2/<entityset>` with `$select`, the OData headers and
//! `Prefer: odata.include-annotations="*",odata.maxpagesize=N` (plus `odata.track-changes`),
//! following `@odata.nextLink` verbatim. Each page's text goes to the caller before the next is
//! requested, so a pull holds one page at a time.
//!
//! 429 waits `Retry-After` seconds exactly; 5xx and network errors back off (bounded); a 401
//! renews the token once, then fails; 403 and 404 fail naming the entity set. Other 4xx answers
//! are returned as `Rejected` so that the caller can fall back (an expired delta link, a column
//! the org does not have).

use std::fmt;
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::entra::Entra;
use crate::config::DynamicsConfig;
use crate::exit::usage;
use crate::net::{self, Backoff};

/// Waits longer than this are capped: a Retry-After of hours means something else is wrong.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Where a query starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// Every record, with change tracking requested (the last page carries a delta link).
    Full,
    /// The changes since a stored `@odata.deltaLink`.
    Delta(String),
    /// Records modified after the watermark (change tracking off), oldest first.
    Since(String),
}

/// A 4xx answer other than 401, 403, 404 and 429, for the caller to judge.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for Rejected {}

/// What the links of a staged page say.
pub(crate) struct Links {
    pub next: Option<String>,
    pub delta: Option<String>,
}

pub(crate) struct WebApi {
    agent: ureq::Agent,
    org_url: String,
    api: String,
    entra: Entra,
    page_size: u32,
    backoff: Backoff,
    max_attempts: u32,
    /// Requests answered 429, for the run's counts.
    pub throttled: u64,
}

impl WebApi {
    /// Checks `[dynamics]` (usage errors name what is missing or wrong) and builds the client.
    pub(crate) fn new(config: &DynamicsConfig) -> Result<WebApi> {
        let org_url = config
            .url
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        if org_url.is_empty() {
            return Err(usage(
                "a live pull needs dynamics.url (DYNAMICS_URL), e.g. https://contoso.crm.dynamics.com; or use pull --fixtures DIR",
            ));
        }
        net::check_url("dynamics.url", &org_url)?;
        let agent = net::agent();
        let entra = Entra::new(config, &org_url, agent.clone())?;
        Ok(WebApi {
            api: format!("{org_url}/api/data/v9.2"),
            org_url,
            agent,
            entra,
            page_size: config.page_size,
            backoff: Backoff::new(Duration::from_millis(config.retry_base_ms)),
            max_attempts: config.max_attempts,
            throttled: 0,
        })
    }

    pub(crate) fn org_url(&self) -> &str {
        &self.org_url
    }

    /// Runs a query from `start`, handing each page's URL and text to `on_page`, which stages it
    /// and returns its links; follows next links until the last page, and returns its delta link.
    pub(crate) fn fetch(
        &mut self,
        entity_set: &str,
        key: &str,
        columns: &[&str],
        start: &Start,
        on_page: &mut dyn FnMut(&str, String) -> Result<Links>,
    ) -> Result<Option<String>> {
        let select = columns.join(",");
        let (mut url, tracking) = match start {
            Start::Full => (format!("{}/{entity_set}?$select={select}", self.api), true),
            Start::Delta(link) => (link.clone(), true),
            Start::Since(watermark) => (
                format!(
                    "{}/{entity_set}?$select={select}&$filter=modifiedon%20gt%20{watermark}&$orderby=modifiedon%20asc,{key}%20asc",
                    self.api
                ),
                false,
            ),
        };
        loop {
            let text = self.get(entity_set, &url, tracking)?;
            let links = on_page(&url, text)?;
            match links.next {
                Some(next) => url = next,
                None => return Ok(links.delta),
            }
        }
    }

    fn get(&mut self, entity_set: &str, url: &str, tracking: bool) -> Result<String> {
        let mut prefer = format!(
            "odata.include-annotations=\"*\",odata.maxpagesize={}",
            self.page_size
        );
        if tracking {
            prefer.push_str(",odata.track-changes");
        }
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.entra.token()?;
            let response = self
                .agent
                .get(url)
                .header("Authorization", &format!("Bearer {token}"))
                .header("Accept", "application/json")
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0")
                .header("If-None-Match", "null")
                .header("Prefer", &prefer)
                .call();
            let mut response = match response {
                Ok(response) => response,
                Err(err) if attempt < self.max_attempts => {
                    let wait = self.backoff.delay(attempt);
                    eprintln!(
                        "warning: {entity_set}: network error ({err}); retrying in {} ms",
                        wait.as_millis()
                    );
                    std::thread::sleep(wait);
                    continue;
                }
                Err(err) => {
                    return Err(anyhow!(
                        "{entity_set}: cannot reach {}: {err}",
                        self.org_url
                    ));
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let error = || {
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                let message = body["error"]["message"]
                    .as_str()
                    .map_or_else(|| text.chars().take(200).collect(), str::to_string);
                (code, message)
            };
            match status {
                200 => return Ok(text),
                429 if attempt < self.max_attempts.max(10) => {
                    // Dataverse asks for exactly this long; hammering extends the penalty.
                    let wait = Duration::from_secs(retry_after.unwrap_or(5)).min(MAX_RETRY_AFTER);
                    self.throttled += 1;
                    eprintln!(
                        "warning: {entity_set}: throttled (429); waiting {} s as Retry-After asks",
                        wait.as_secs()
                    );
                    std::thread::sleep(wait);
                }
                401 if !renewed => {
                    renewed = true;
                    attempt -= 1;
                    self.entra.invalidate();
                }
                401 => {
                    let (code, message) = error();
                    return Err(anyhow!(
                        "{entity_set}: Dynamics refused a fresh access token (401 {code}: {message}); check that the app is an application user of the org"
                    ));
                }
                403 => {
                    let (code, message) = error();
                    return Err(anyhow!(
                        "{entity_set}: Dynamics denied access (403 {code}: {message}); the user needs read access to {entity_set}"
                    ));
                }
                404 => {
                    let (code, message) = error();
                    return Err(anyhow!(
                        "{entity_set}: not found at {} (404 {code}: {message})",
                        self.api
                    ));
                }
                status if status >= 500 && attempt < self.max_attempts => {
                    let wait = self.backoff.delay(attempt);
                    eprintln!(
                        "warning: {entity_set}: HTTP {status}; retrying in {} ms",
                        wait.as_millis()
                    );
                    std::thread::sleep(wait);
                }
                status if (400..500).contains(&status) => {
                    let (code, message) = error();
                    return Err(Rejected {
                        status,
                        code,
                        message,
                    }
                    .into());
                }
                status => {
                    let (code, message) = error();
                    return Err(anyhow!(
                        "{entity_set}: gave up after {attempt} attempts: HTTP {status} {code}: {message}"
                    ));
                }
            }
        }
    }
}
