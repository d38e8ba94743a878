//! Microsoft Entra ID tokens for the Dataverse Web API: client credentials or ROPC (username and
//! password), against the tenant's v2 token endpoint by default (scope `<org url>/.default`) or
//! `token_url`. `expires_in` is accepted as a number (v2) or a string (v1). Tokens are renewed a
//! minute before they expire, and on demand after a 401.
//!
//! The client secret, password and token never leave this module; error texts are redacted.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::Value;

use crate::config::{DynamicsAuth, DynamicsConfig};
use crate::exit::usage;

const MARGIN: Duration = Duration::from_secs(60);

pub(crate) struct Entra {
    agent: ureq::Agent,
    token_url: String,
    form: Vec<(&'static str, String)>,
    secrets: Vec<String>,
    token: Option<(String, Instant)>,
}

impl Entra {
    /// Checks the `[dynamics]` settings the grant needs, naming any that are missing.
    pub(crate) fn new(config: &DynamicsConfig, org_url: &str, agent: ureq::Agent) -> Result<Entra> {
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
        let mut secrets = Vec::new();
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
                secrets.push(password);
            }
        }
        if !missing.is_empty() {
            return Err(usage(format!(
                "a live pull needs these Dynamics settings: {}",
                missing.join(", ")
            )));
        }
        secrets.push(secret);
        secrets.retain(|s| !s.is_empty());
        crate::net::check_url("dynamics.token_url", &token_url)?;
        Ok(Entra {
            agent,
            token_url,
            form,
            secrets,
            token: None,
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
                    self.redact(&err.to_string())
                )
            })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(token) = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|_| status == 200)
        else {
            let error = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no access_token");
            let description = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            let description = description.lines().next().unwrap_or("");
            let message = format!(
                "Entra ID refused the token request (HTTP {status}, {error}): {}",
                self.redact(description)
            );
            return Err(if (400..500).contains(&status) {
                usage(message)
            } else {
                anyhow!(message)
            });
        };
        let expires_in = match body.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
            _ => 0,
        };
        let lifetime = Duration::from_secs(expires_in);
        self.token = Some((
            token.to_string(),
            started + lifetime - MARGIN.min(lifetime / 2),
        ));
        Ok(token.to_string())
    }

    /// Forgets the token, so that the next call fetches a new one (after a 401).
    pub(crate) fn invalidate(&mut self) {
        self.token = None;
    }

    fn redact(&self, text: &str) -> String {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        crate::net::redact(text, &secrets)
    }
}
