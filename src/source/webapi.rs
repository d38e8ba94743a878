//! The Dataverse Web API: `GET /api/data/v9.2/<entityset>` with `$select`, the OData headers and
//! `Prefer: odata.include-annotations="*",odata.maxpagesize=N` (plus `odata.track-changes`),
//! following `@odata.nextLink` verbatim once `paging` has checked it. Each page is parsed and its
//! links checked before it goes to the caller, and handed over before the next is requested,
//! so a pull holds one page at a time and stages nothing from a page whose links are refused.
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
use super::page::{self, Page};
use super::paging::Paging;
use super::strategy::Start;
use crate::config::DynamicsConfig;
use crate::exit::usage;
use crate::net::{self, Backoff};

/// Waits longer than this are capped: a Retry-After of hours means something else is wrong.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// A page of 5000 records with every annotation stays far below this.
const MAX_PAGE_BYTES: u64 = 256_000_000;

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

pub(crate) struct WebApi {
    agent: ureq::Agent,
    org_url: String,
    api: String,
    entra: Entra,
    page_size: u32,
    backoff: Backoff,
    max_attempts: u32,
    max_pages: u32,
    timeout: Duration,
    /// Requests answered 429, for the run's counts.
    pub throttled: u64,
    /// Requests sent again after a network error, a 5xx or a body cut short.
    pub retried: u64,
}

impl WebApi {
    /// Checks `[dynamics]` (usage errors name what is missing or wrong) and builds the client.
    pub(crate) fn new(config: &DynamicsConfig) -> Result<WebApi> {
        let org_url = config.url.as_deref().unwrap_or_default().trim();
        if org_url.is_empty() {
            return Err(usage(
                "a live pull needs dynamics.url (DYNAMICS_URL), e.g. https://contoso.crm.dynamics.com; or use pull --fixtures DIR",
            ));
        }
        let org_url = net::check_url("dynamics.url", org_url)?;
        let timeout = Duration::from_secs(config.http_timeout_secs);
        let agent = net::agent(timeout);
        let entra = Entra::new(config, &org_url, agent.clone(), timeout)?;
        Ok(WebApi {
            api: format!("{org_url}/api/data/v9.2"),
            org_url,
            agent,
            entra,
            page_size: config.page_size,
            backoff: Backoff::new(Duration::from_millis(config.retry_base_ms)),
            max_attempts: config.max_attempts,
            max_pages: config.max_pages_per_query,
            timeout,
            throttled: 0,
            retried: 0,
        })
    }

    pub(crate) fn org_url(&self) -> &str {
        &self.org_url
    }

    /// Runs a query from `start`, handing each page, parsed and with its links checked, to
    /// `on_page` (which stages it); follows next links until the last page, and returns its
    /// delta link. A link that leaves the org, loops, or passes the page limit fails the query
    /// before its page is handed over and before anything is sent to it.
    pub(crate) fn fetch(
        &mut self,
        entity_set: &str,
        key: &str,
        columns: &[&str],
        start: &Start,
        on_page: &mut dyn FnMut(&str, &Page<'_>) -> Result<()>,
    ) -> Result<Option<String>> {
        let mut paging = Paging::new(&self.org_url, self.max_pages)
            .ok_or_else(|| usage(format!("dynamics.url {} is not a URL", self.org_url)))?;
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
        let first = if matches!(start, Start::Delta(_)) {
            "the stored delta link (pull --full starts afresh)"
        } else {
            "the query"
        };
        paging.follow(first, &url)?;
        loop {
            let text = self.get(entity_set, &url, tracking)?;
            // A server that quotes the token or a secret back gets it cut before anything is
            // parsed, staged or pushed on.
            let text = if crate::redact::holds_secret(&text) {
                crate::redact::redact(&text).into_owned()
            } else {
                text
            };
            let page = page::parse(&url, &text, Some(entity_set))?;
            if page.entity_set.as_deref() != Some(entity_set) {
                return Err(anyhow!(
                    "{url}: a page of the {entity_set} query says it holds {}; refusing to stage it",
                    page.entity_set.as_deref().unwrap_or("no entity set")
                ));
            }
            if let Some(delta) = &page.delta_link {
                paging.check("@odata.deltaLink", delta)?;
            }
            if let Some(next) = &page.next_link {
                paging.follow("@odata.nextLink", next)?;
            }
            on_page(&url, &page)?;
            match page.next_link {
                Some(next) => url = next,
                None => return Ok(page.delta_link),
            }
        }
    }

    /// One GET of `path` under the Web API (`WhoAmI`, `accounts?$select=...&$top=1`), for
    /// `check`: the body, and whether Dataverse applied change tracking when asked for it.
    pub(crate) fn probe(
        &mut self,
        what: &str,
        path: &str,
        tracking: bool,
    ) -> Result<(String, bool)> {
        let url = format!("{}/{path}", self.api);
        // One record is enough to know; a probe never reads a whole page.
        let page_size = std::mem::replace(&mut self.page_size, 1);
        let result = self.get_applied(what, &url, tracking);
        self.page_size = page_size;
        result
    }

    /// Fetches a token (for `check`).
    pub(crate) fn token(&mut self) -> Result<()> {
        self.entra.token().map(|_| ())
    }

    fn get(&mut self, entity_set: &str, url: &str, tracking: bool) -> Result<String> {
        self.get_applied(entity_set, url, tracking)
            .map(|(text, _)| text)
    }

    fn get_applied(
        &mut self,
        entity_set: &str,
        url: &str,
        tracking: bool,
    ) -> Result<(String, bool)> {
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
                    self.retried += 1;
                    crate::progress::wait(&format!(
                        "{entity_set}: network error ({}); retrying in {} ms",
                        net::transport_error(&err, self.timeout),
                        wait.as_millis()
                    ));
                    crate::stop::pause(wait)?;
                    continue;
                }
                Err(err) => {
                    return Err(anyhow!(
                        "{entity_set}: cannot reach {}: {}",
                        self.org_url,
                        net::transport_error(&err, self.timeout)
                    ));
                }
            };
            let status = response.status().as_u16();
            let tracked = response
                .headers()
                .get("preference-applied")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("odata.track-changes"));
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = match net::read_body(&mut response, MAX_PAGE_BYTES, self.timeout) {
                Ok(text) => text,
                Err(why) if attempt < self.max_attempts => {
                    let wait = self.backoff.delay(attempt);
                    self.retried += 1;
                    crate::progress::wait(&format!(
                        "{entity_set}: HTTP {status}, but {why}; retrying in {} ms",
                        wait.as_millis()
                    ));
                    crate::stop::pause(wait)?;
                    continue;
                }
                Err(why) => {
                    return Err(anyhow!(
                        "{entity_set}: gave up after {attempt} attempts: HTTP {status}, but {why}"
                    ));
                }
            };
            let error = || {
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                let message = body["error"]["message"]
                    .as_str()
                    .map_or_else(|| net::describe_body(&text), str::to_string);
                (code, message)
            };
            match status {
                200 => return Ok((text, tracked)),
                300..=399 => {
                    return Err(anyhow!(
                        "{entity_set}: Dynamics answered a redirect (HTTP {status}); oppsync follows none, check dynamics.url"
                    ));
                }
                429 if attempt < self.max_attempts.max(10) => {
                    // Dataverse asks for exactly this long; hammering extends the penalty.
                    let wait = Duration::from_secs(retry_after.unwrap_or(5)).min(MAX_RETRY_AFTER);
                    self.throttled += 1;
                    crate::progress::wait(&format!(
                        "{entity_set}: throttled (429); waiting {} s as Retry-After asks",
                        wait.as_secs()
                    ));
                    crate::stop::pause(wait)?;
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
                    self.retried += 1;
                    crate::progress::wait(&format!(
                        "{entity_set}: HTTP {status}; retrying in {} ms",
                        wait.as_millis()
                    ));
                    crate::stop::pause(wait)?;
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
