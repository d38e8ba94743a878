//! Microsoft Entra ID tokens for the Dataverse Web API: client credentials or ROPC (username and
//! password), against the tenant's v2 token endpoint by default (scope `<org url>/.default`) or
//! `token_url`. `expires_in` is accepted as a number (v2) or a string (v1). Tokens are renewed a
//! minute before they expire, and on demand after a 401.
//!
//! The client secret, password and token never leave this module, and all three are registered
//! with the redactor, so an error text that quotes them is cut before it is shown or stored.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::Value;

use crate::config::{DynamicsAuth, DynamicsConfig};
use crate::exit::usage;

const MARGIN: Duration = Duration::from_secs(60);
/// Tokens live at most this long, whatever `expires_in` says (Entra's live about an hour): a
/// huge value from a broken server must not overflow the clock arithmetic.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A token response is a few kilobytes.
const MAX_RESPONSE_BYTES: u64 = 1_000_000;

pub(crate) struct Entra {
    agent: ureq::Agent,
    token_url: String,
    form: Vec<(&'static str, String)>,
    token: Option<(String, Instant)>,
    timeout: Duration,
}

impl Entra {
    /// Checks the `[dynamics]` settings the grant needs, naming any that are missing.
    pub(crate) fn new(
        config: &DynamicsConfig,
        org_url: &str,
        agent: ureq::Agent,
        timeout: Duration,
    ) -> Result<Entra> {
        let mut missing = Vec::new();
        let client_id = config.client_id.clone().unwrap_or_default();
        if client_id.is_empty() {
            missing.push("dynamics.client_id (DYNAMICS_CLIENT_ID)");
        }
        let secret = config
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let token_url = match (&config.token_url, &config.tenant) {
            (Some(url), _) if !url.is_empty() => url.clone(),
            (_, Some(tenant)) if !tenant.is_empty() => {
                // A tenant is a GUID or a domain name; anything else would reshape the URL.
                if !tenant
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(usage(format!(
                        "dynamics.tenant {tenant:?} is not a tenant id or domain name"
                    )));
                }
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
            _ => {
                missing.push(
                    "dynamics.tenant (DYNAMICS_TENANT) or dynamics.token_url (DYNAMICS_TOKEN_URL)",
                );
                String::new()
            }
        };
        let scope = format!("{org_url}/.default");
        let mut form = vec![("client_id", client_id), ("scope", scope)];
        match config.auth {
            DynamicsAuth::ClientCredentials => {
                if secret.is_empty() {
                    missing.push("dynamics.client_secret (DYNAMICS_CLIENT_SECRET)");
                }
                form.push(("grant_type", "client_credentials".into()));
                form.push(("client_secret", secret.clone()));
            }
            DynamicsAuth::Ropc => {
                let username = config.username.clone().unwrap_or_default();
                let password = config
                    .password
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default();
                if username.is_empty() {
                    missing.push("dynamics.username (DYNAMICS_USERNAME)");
                }
                if password.is_empty() {
                    missing.push("dynamics.password (DYNAMICS_PASSWORD)");
                }
                form.push(("grant_type", "password".into()));
                form.push(("username", username));
                form.push(("password", password.clone()));
                // A confidential client (as Marketo's ROPC set-up registers) also sends its secret.
                if !secret.is_empty() {
                    form.push(("client_secret", secret.clone()));
                }
                crate::redact::register(&password);
            }
        }
        if !missing.is_empty() {
            return Err(usage(format!(
                "a live pull needs these Dynamics settings: {}",
                missing.join(", ")
            )));
        }
        crate::redact::register(&secret);
        let token_url = crate::net::check_url("dynamics.token_url", &token_url)?;
        Ok(Entra {
            agent,
            token_url,
            form,
            token: None,
            timeout,
        })
    }

    /// A valid access token, fetched or renewed as needed.
    pub(crate) fn token(&mut self) -> Result<String> {
        if let Some((token, renew_at)) = &self.token
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let started = Instant::now();
        let form: Vec<(&str, &str)> = self.form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut response = self
            .agent
            .post(&self.token_url)
            .send_form(form)
            .map_err(|err| {
                anyhow!(
                    "cannot reach the token endpoint {}: {}",
                    self.token_url,
                    crate::net::transport_error(&err, self.timeout)
                )
            })?;
        let status = response.status().as_u16();
        let text = crate::net::read_body(&mut response, MAX_RESPONSE_BYTES, self.timeout)
            .map_err(|why| anyhow!("the token endpoint answered HTTP {status}, but {why}"))?;
        let body: Value =
            serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap_or(Value::Null);
        let Some(token) = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| status == 200 && !t.trim().is_empty())
        else {
            let message = match body.get("error").and_then(Value::as_str) {
                Some(error) => {
                    let description = body
                        .get("error_description")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    format!(
                        "Entra ID refused the token request (HTTP {status}, {error}): {}",
                        description.lines().next().unwrap_or("")
                    )
                }
                None => format!(
                    "the token endpoint answered HTTP {status} without an access_token ({})",
                    crate::net::describe_body(&text)
                ),
            };
            return Err(if (400..500).contains(&status) {
                usage(message)
            } else {
                anyhow!(message)
            });
        };
        let lifetime = crate::net::token_lifetime(&body, MAX_LIFETIME);
        crate::redact::register_token(token, lifetime)
            .map_err(|why| anyhow!("the token endpoint {} answered {why}", self.token_url))?;
        let renew_at = started
            .checked_add(lifetime - MARGIN.min(lifetime / 2))
            .unwrap_or_else(Instant::now);
        self.token = Some((token.to_string(), renew_at));
        Ok(token.to_string())
    }

    /// Forgets the token, so that the next call fetches a new one (after a 401).
    pub(crate) fn invalidate(&mut self) {
        self.token = None;
    }
}
