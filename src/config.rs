//! `oppsync.toml` and its environment overrides (PRODUCT.md section 5).
//!
//! Unknown keys and bad values are usage errors naming the file and the setting. Secrets are
//! held in `Secret`, whose `Debug` never shows the value; nothing here writes them anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use crate::exit::usage;
use crate::object::Object;

/// The whole configuration, defaults filled in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub marketo: MarketoConfig,
    pub dynamics: DynamicsConfig,
    pub rules: RulesConfig,
    pub export: ExportConfig,
    pub mapping: MappingConfig,
    pub history: HistoryConfig,
}

/// `[history]`: how long the audit trail of API calls and per-record outcomes is kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Runs older than this many days lose their API calls and outcomes, and are removed when
    /// nothing refers to them any more.
    pub keep_days: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { keep_days: 90 }
    }
}

/// `[export]`: which records become Marketo records, and in which currency (PRODUCT.md
/// section 3). The export views read these from `rule_setting`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    pub currency: Currency,
    pub leads: LeadScope,
    pub companies: CompanyScope,
}

/// The currency amounts are sent in: Marketo holds one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Currency {
    /// The org's base currency (the `_base` columns Dynamics converts into).
    #[default]
    Base,
    /// Each record's own currency (the plain columns): only right for a one-currency org.
    Transaction,
}

/// Which contacts become leads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadScope {
    /// Contacts that hold a derived opportunity role.
    #[default]
    RoleHolders,
    /// Every in-scope contact with an email.
    AllInScope,
}

/// Which accounts become companies.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompanyScope {
    /// Accounts an exported opportunity or lead points at.
    #[default]
    Referenced,
    /// Every in-scope account.
    AllInScope,
}

impl ExportConfig {
    /// The settings as the export views read them from `rule_setting`.
    pub(crate) fn settings(&self) -> [(&'static str, &'static str); 3] {
        [
            (
                "export_currency",
                match self.currency {
                    Currency::Base => "base",
                    Currency::Transaction => "transaction",
                },
            ),
            (
                "export_leads",
                match self.leads {
                    LeadScope::RoleHolders => "role_holders",
                    LeadScope::AllInScope => "all_in_scope",
                },
            ),
            (
                "export_companies",
                match self.companies {
                    CompanyScope::Referenced => "referenced",
                    CompanyScope::AllInScope => "all_in_scope",
                },
            ),
        ]
    }
}

/// `[mapping.opportunity]`, `[mapping.company]`, `[mapping.lead]`: extra Marketo fields, each
/// read from a Dynamics column of the staged record (`marketoField = "dynamicscolumn"`, or a
/// column's annotation such as `"industrycode@OData.Community.Display.V1.FormattedValue"`). A
/// mapped field replaces a default one of the same name; the dedupe keys cannot be remapped.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    pub opportunity: BTreeMap<String, String>,
    pub company: BTreeMap<String, String>,
    pub lead: BTreeMap<String, String>,
}

impl MappingConfig {
    /// The mapping of one Marketo object; empty for objects without a `[mapping.*]` table.
    pub(crate) fn of(&self, object: Object) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        match object {
            Object::Opportunity => &self.opportunity,
            Object::Company => &self.company,
            Object::Lead => &self.lead,
            Object::SalesPerson | Object::OpportunityRole => &EMPTY,
        }
    }
}

/// A Marketo API field name: a letter, then letters, digits or underscores.
fn is_marketo_field(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 80
}

/// A Web API column (`name`, `_lookup_value`), optionally with an annotation suffix.
fn is_dynamics_column(name: &str) -> bool {
    let (column, annotation) = name.split_once('@').unwrap_or((name, ""));
    let mut chars = column.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && annotation
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        && name.contains('@') != annotation.is_empty()
        && name.len() <= 200
}

/// `[marketo]`: where and how to push.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketoConfig {
    pub base_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub rate_limit_calls: u32,
    pub rate_limit_window_secs: u64,
    pub on_opportunity_delete: OnOpportunityDelete,
    /// First backoff after a transient error; doubles per attempt (with jitter), capped at 30 s.
    pub retry_base_ms: u64,
    /// Attempts of one request before push gives up on it.
    pub max_attempts: u32,
    /// The longest one call may take, body included.
    pub http_timeout_secs: u64,
    /// Requests push keeps in flight at once (Marketo allows 10 per instance, shared with
    /// every other integration).
    pub max_in_flight: u32,
    /// How long push trusts a stored describe of an object before describing it again; 0
    /// describes every object it writes on every push.
    pub describe_max_age_hours: u32,
    /// How long push holds back a record Marketo refused (a record-level skip), while the record
    /// is unchanged: sent again at once it would be refused again, at a call per batch every
    /// cycle. 0 sends every refused record again on every push.
    pub retry_refused_hours: u32,
    /// How often `sync` asks Marketo about a random sample of what it acknowledged (a query
    /// of 300 leads, one of 150 opportunities and one of 150 roles), to find records deleted
    /// or merged there since; 0 never does.
    pub sample_every_hours: u32,
}

impl Default for MarketoConfig {
    fn default() -> Self {
        MarketoConfig {
            base_url: None,
            client_id: None,
            client_secret: None,
            rate_limit_calls: 100,
            rate_limit_window_secs: 20,
            on_opportunity_delete: OnOpportunityDelete::Delete,
            retry_base_ms: 1000,
            max_attempts: 6,
            http_timeout_secs: 120,
            max_in_flight: 4,
            describe_max_age_hours: 24,
            retry_refused_hours: 24,
            sample_every_hours: 24,
        }
    }
}

/// What push does in Marketo when an opportunity is deleted in Dynamics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOpportunityDelete {
    Delete,
    Keep,
}

/// `[dynamics]`: where and how to pull.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicsConfig {
    pub url: Option<String>,
    pub tenant: Option<String>,
    pub auth: DynamicsAuth,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub token_url: Option<String>,
    pub page_size: u32,
    /// First backoff after a 5xx or network error; doubles per attempt, capped at 30 s.
    pub retry_base_ms: u64,
    /// Attempts of one request before the pull gives up on it.
    pub max_attempts: u32,
    /// The longest one call may take, body included.
    pub http_timeout_secs: u64,
    /// Pages one query may take before the pull stops: a server whose next links never end
    /// must not keep a pull running forever.
    pub max_pages_per_query: u32,
}

impl Default for DynamicsConfig {
    fn default() -> Self {
        DynamicsConfig {
            url: None,
            tenant: None,
            auth: DynamicsAuth::ClientCredentials,
            client_id: None,
            client_secret: None,
            username: None,
            password: None,
            token_url: None,
            page_size: 5000,
            retry_base_ms: 1000,
            max_attempts: 6,
            http_timeout_secs: 120,
            max_pages_per_query: 100_000,
        }
    }
}

/// The Entra ID grant used to reach Dynamics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DynamicsAuth {
    ClientCredentials,
    Ropc,
}

/// `[rules]`: the names and categories the association rules use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub customer_contact_role: String,
    pub stakeholder_default_role: String,
    pub stakeholder_categories: Vec<i64>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            customer_contact_role: "Customer".to_string(),
            stakeholder_default_role: "Stakeholder".to_string(),
            stakeholder_categories: vec![1000],
        }
    }
}

/// A secret value: shown as `<redacted>` by `Debug`, read only through `expose`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret (the demo's simulator credentials).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl Config {
    /// Loads `explicit` (which must exist), else `./oppsync.toml` when present, else defaults;
    /// then applies environment overrides and validates.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, ConfigSource)> {
        Self::load_with_env(explicit, &|name| std::env::var(name).ok())
    }

    pub(crate) fn load_with_env(
        explicit: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, ConfigSource)> {
        let path = match explicit {
            Some(path) if !path.is_file() => {
                let what = if path.exists() {
                    "is not a file"
                } else {
                    "does not exist"
                };
                return Err(usage(format!("config file {} {what}", path.display())));
            }
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from("oppsync.toml")).filter(|p| p.is_file()),
        };
        let (mut config, source) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    usage(format!("cannot read config file {}: {err}", path.display()))
                })?;
                // Editors on Windows may start the file with a byte-order mark; TOML has no use
                // for it.
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                let config = parse(&path, text)?;
                warn_if_secrets_shared(&path, &config);
                (config, ConfigSource::File(path))
            }
            None => (Config::default(), ConfigSource::Defaults),
        };
        let overrides = from_environment(env)?;
        let from_env: Vec<&str> = overrides.iter().map(|(setting, _)| *setting).collect();
        for (setting, from) in overrides {
            config.take(setting, from);
        }
        config.validate(&source, &from_env)?;
        config.register_secrets();
        Ok((config, source))
    }

    /// Tells the redactor every configured secret, so that no server can make oppsync print
    /// or store one by quoting it back.
    fn register_secrets(&self) {
        for (_, secret) in self.secrets() {
            if let Some(secret) = secret {
                crate::redact::register(secret.expose());
            }
        }
    }

    /// Every secret setting, by name, with its value when set.
    fn secrets(&self) -> [(&'static str, Option<&Secret>); 3] {
        [
            ("marketo.client_secret", self.marketo.client_secret.as_ref()),
            (
                "dynamics.client_secret",
                self.dynamics.client_secret.as_ref(),
            ),
            ("dynamics.password", self.dynamics.password.as_ref()),
        ]
    }

    /// Checks what parsing cannot: bounds, non-empty names, mapping names. An error names the
    /// setting and where its value came from: the file, or the environment variable
    /// (`from_env` lists the settings the environment set).
    fn validate(&self, source: &ConfigSource, from_env: &[&str]) -> Result<()> {
        let origin = |setting: &str| match source {
            _ if from_env.contains(&setting) => format!("environment {}", env_name(setting)),
            ConfigSource::File(path) => format!("config {}", path.display()),
            ConfigSource::Defaults => "configuration".to_string(),
        };
        let bad =
            |setting: &str, why: &str| Err(usage(format!("{}: {setting} {why}", origin(setting))));
        if self.rules.customer_contact_role.trim().is_empty() {
            return bad("rules.customer_contact_role", "must not be empty");
        }
        if self.rules.stakeholder_default_role.trim().is_empty() {
            return bad("rules.stakeholder_default_role", "must not be empty");
        }
        if self.rules.stakeholder_categories.is_empty() {
            return bad(
                "rules.stakeholder_categories",
                "must list at least one category",
            );
        }
        for object in Object::ALL {
            let (Some(table), keys) = (object.mapping_name(), object.dedupe_fields()) else {
                continue;
            };
            for (field, column) in self.mapping.of(object) {
                let setting = format!("mapping.{table}.{field}");
                if !is_marketo_field(field) {
                    return bad(
                        &setting,
                        "is not a Marketo field name (letters, digits, underscores)",
                    );
                }
                if keys.contains(&field.as_str()) {
                    return bad(
                        &setting,
                        "is the dedupe key oppsync sets itself and cannot be remapped",
                    );
                }
                if !is_dynamics_column(column) {
                    return bad(
                        &setting,
                        &format!("= \"{column}\" is not a Dynamics column name"),
                    );
                }
            }
        }
        for (setting, secret) in self.secrets() {
            let Some(secret) = secret else { continue };
            if crate::redact::too_short(secret.expose()) {
                return bad(
                    setting,
                    &format!(
                        "has {}, too few for a real secret (Marketo's client \
                         secrets have 32, Entra ID's 40, its passwords at least {}): oppsync \
                         cuts every secret out of what it prints and stores, and one this short \
                         would cut ordinary text; check the value",
                        crate::redact::characters(secret.expose()),
                        crate::redact::SHORTEST_SECRET
                    ),
                );
            }
        }
        let m = &self.marketo;
        let d = &self.dynamics;
        // Every number that becomes a duration or a count is bounded here, so that no setting
        // can overflow the arithmetic that uses it.
        let bounded: [(&str, u64, u64, u64, &str); 16] = [
            (
                "history.keep_days",
                self.history.keep_days.into(),
                1,
                36_500,
                "",
            ),
            (
                "marketo.rate_limit_calls",
                m.rate_limit_calls.into(),
                1,
                1000,
                "",
            ),
            (
                "marketo.rate_limit_window_secs",
                m.rate_limit_window_secs,
                1,
                3600,
                " (an hour)",
            ),
            (
                "marketo.retry_base_ms",
                m.retry_base_ms,
                1,
                60_000,
                " (a minute)",
            ),
            ("marketo.max_attempts", m.max_attempts.into(), 1, 20, ""),
            (
                "marketo.http_timeout_secs",
                m.http_timeout_secs,
                1,
                600,
                " (ten minutes)",
            ),
            (
                "marketo.max_in_flight",
                m.max_in_flight.into(),
                1,
                10,
                " (Marketo's limit per instance)",
            ),
            (
                "marketo.describe_max_age_hours",
                m.describe_max_age_hours.into(),
                0,
                168,
                " (a week)",
            ),
            (
                "marketo.retry_refused_hours",
                m.retry_refused_hours.into(),
                0,
                168,
                " (a week)",
            ),
            (
                "marketo.sample_every_hours",
                m.sample_every_hours.into(),
                0,
                168,
                " (a week)",
            ),
            (
                "dynamics.page_size",
                d.page_size.into(),
                1,
                5000,
                " (the Web API maximum)",
            ),
            (
                "dynamics.retry_base_ms",
                d.retry_base_ms,
                1,
                60_000,
                " (a minute)",
            ),
            ("dynamics.max_attempts", d.max_attempts.into(), 1, 20, ""),
            (
                "dynamics.http_timeout_secs",
                d.http_timeout_secs,
                1,
                600,
                " (ten minutes)",
            ),
            (
                "dynamics.max_pages_per_query",
                d.max_pages_per_query.into(),
                1,
                10_000_000,
                "",
            ),
            (
                "rules.stakeholder_categories",
                self.rules.stakeholder_categories.len() as u64,
                1,
                1000,
                " entries",
            ),
        ];
        for (setting, value, low, high, note) in bounded {
            if !(low..=high).contains(&value) {
                return bad(
                    setting,
                    &format!("must be between {low} and {high}{note}, not {value}"),
                );
            }
        }
        Ok(())
    }
}

/// Defines `SETTINGS` and `Config::take` from one list, so that no setting has a variable
/// that sets nothing.
macro_rules! settings {
    ($($section:ident . $key:ident),* $(,)?) => {
        pub(crate) const SETTINGS: &[&str] =
            &[$(concat!(stringify!($section), ".", stringify!($key))),*];

        impl Config {
            /// Sets `setting` to its value in `from`.
            fn take(&mut self, setting: &str, from: Config) {
                $(
                    if setting == concat!(stringify!($section), ".", stringify!($key)) {
                        self.$section.$key = from.$section.$key;
                        return;
                    }
                )*
            }
        }
    };
}

// Every setting outside `[mapping.*]`, each of which can also come from the environment
// (PRODUCT.md section 5), where it wins over the file: `[marketo]` and `[dynamics]` keys as
// MARKETO_KEY and DYNAMICS_KEY (the names PRODUCT.md gives, such as MARKETO_BASE_URL), the
// others as OPPSYNC_SECTION_KEY, so that no variable as generic as EXPORT_CURRENCY, meant for
// another program, changes what is sent to Marketo. The `[mapping.*]` tables are left out: their
// keys are Marketo field names, whose case an environment variable's name would lose.
settings!(
    marketo.base_url,
    marketo.client_id,
    marketo.client_secret,
    marketo.rate_limit_calls,
    marketo.rate_limit_window_secs,
    marketo.on_opportunity_delete,
    marketo.retry_base_ms,
    marketo.max_attempts,
    marketo.http_timeout_secs,
    marketo.max_in_flight,
    marketo.describe_max_age_hours,
    marketo.retry_refused_hours,
    marketo.sample_every_hours,
    dynamics.url,
    dynamics.tenant,
    dynamics.auth,
    dynamics.client_id,
    dynamics.client_secret,
    dynamics.username,
    dynamics.password,
    dynamics.token_url,
    dynamics.page_size,
    dynamics.retry_base_ms,
    dynamics.max_attempts,
    dynamics.http_timeout_secs,
    dynamics.max_pages_per_query,
    rules.customer_contact_role,
    rules.stakeholder_default_role,
    rules.stakeholder_categories,
    export.currency,
    export.leads,
    export.companies,
    history.keep_days,
);

/// The environment variable for `setting` (`section.key`): see `SETTINGS`.
pub(crate) fn env_name(setting: &str) -> String {
    let name = setting.replace('.', "_").to_uppercase();
    if setting.starts_with("marketo.") || setting.starts_with("dynamics.") {
        name
    } else {
        format!("OPPSYNC_{name}")
    }
}

/// The settings the environment sets, each value checked against its setting alone. A value is
/// taken as text when the setting is text, else as TOML (`4`, `[1000, 1001]`), else as a
/// list (`1000, 1001`). An empty variable counts as unset, as an env file's `KEY=` line would.
/// A value that fits none is a usage error naming the variable; a secret's value is never
/// shown, and, being text, never fails.
fn from_environment(env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(&'static str, Config)>> {
    let mut overrides = Vec::new();
    for &setting in SETTINGS {
        let name = env_name(setting);
        let Some(text) = env(&name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let (section, key) = setting.split_once('.').unwrap_or(("", setting));
        // The setting alone, in a configuration of defaults.
        let alone = |value: toml::Value| -> std::result::Result<Config, String> {
            let mut inner = toml::Table::new();
            inner.insert(key.to_string(), value);
            let mut outer = toml::Table::new();
            outer.insert(section.to_string(), toml::Value::Table(inner));
            outer
                .try_into::<Config>()
                .map_err(|err| err.message().trim().replace('\n', " "))
        };
        let first_error = match alone(toml::Value::String(text.clone())) {
            Ok(config) => {
                overrides.push((setting, config));
                continue;
            }
            Err(err) => err,
        };
        let as_toml = [format!("v = {text}"), format!("v = [{text}]")]
            .iter()
            .filter_map(|line| toml::from_str::<toml::Table>(line).ok())
            .filter_map(|mut table| table.remove("v"))
            .find_map(|value| alone(value).ok());
        match as_toml {
            Some(config) => overrides.push((setting, config)),
            None => {
                return Err(usage(format!(
                    "environment {name}={text:?}: {setting} {first_error}"
                )));
            }
        }
    }
    Ok(overrides)
}

/// Warns when the file holds a secret and users other than its owner may read it, as `db` does
/// for the database: the secret is then theirs too.
fn warn_if_secrets_shared(path: &Path, config: &Config) {
    let held: Vec<&str> = config
        .secrets()
        .into_iter()
        .filter_map(|(setting, secret)| secret.and(Some(setting)))
        .collect();
    if held.is_empty() {
        return;
    }
    let Some(mode) = crate::db::readable_by_others(path) else {
        return;
    };
    let variables: Vec<String> = held.iter().map(|setting| env_name(setting)).collect();
    crate::progress::warn(&format!(
        "warning: config {} holds {} and is readable by other users (mode {mode:o}): chmod 600 {0}, or set {} in the environment instead",
        path.display(),
        held.join(", "),
        variables.join(", ")
    ));
}

/// Parses TOML into a `Config`, turning errors into one line that names file, line and column.
fn parse(path: &Path, text: &str) -> Result<Config> {
    toml::from_str(text).map_err(|err| {
        let place = err
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default();
        let message = err.message().trim().replace('\n', " ");
        usage(format!("config {}{place}: {message}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oppsync.toml");
        std::fs::write(&path, text).unwrap();
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        Config::load_with_env(Some(&path), &lookup).map(|(c, _)| c)
    }

    #[test]
    fn defaults_match_the_product_spec() {
        let config = load_text("", &[]).unwrap();
        assert_eq!(config.rules.customer_contact_role, "Customer");
        assert_eq!(config.rules.stakeholder_default_role, "Stakeholder");
        assert_eq!(config.rules.stakeholder_categories, vec![1000]);
        assert_eq!(config.marketo.rate_limit_calls, 100);
        assert_eq!(config.marketo.rate_limit_window_secs, 20);
        assert_eq!(config.dynamics.page_size, 5000);
        assert_eq!(
            config.marketo.on_opportunity_delete,
            OnOpportunityDelete::Delete
        );
    }

    #[test]
    fn export_settings_default_to_the_product_spec_and_take_their_alternatives() {
        let config = load_text("", &[]).unwrap();
        assert_eq!(
            config.export.settings(),
            [
                ("export_currency", "base"),
                ("export_leads", "role_holders"),
                ("export_companies", "referenced")
            ]
        );
        let config = load_text(
            "[export]\ncurrency = \"transaction\"\nleads = \"all_in_scope\"\ncompanies = \"all_in_scope\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.export.currency, Currency::Transaction);
        assert_eq!(config.export.leads, LeadScope::AllInScope);
        assert_eq!(config.export.companies, CompanyScope::AllInScope);
        let err = load_text("[export]\ncurrency = \"yen\"\n", &[]).unwrap_err();
        assert!(crate::exit::is_usage(&err));
        assert!(format!("{err:#}").contains("yen"), "{err:#}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let config = load_text(
            "[marketo]\nbase_url = \"https://file.example\"\nclient_secret = \"from-file\"\n",
            &[
                ("MARKETO_BASE_URL", "http://127.0.0.1:1"),
                ("MARKETO_CLIENT_SECRET", "s3cret-from-env"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.marketo.base_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            config.marketo.client_secret.as_ref().unwrap().expose(),
            "s3cret-from-env"
        );
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "Debug must not show secrets"
        );
    }

    /// A value other than the default for every setting, as its environment variable gives it.
    const FROM_ENVIRONMENT: &[(&str, &str)] = &[
        ("marketo.base_url", "http://127.0.0.1:9"),
        ("marketo.client_id", "id-from-env"),
        ("marketo.client_secret", "secret-from-env"),
        ("marketo.rate_limit_calls", "50"),
        ("marketo.rate_limit_window_secs", "10"),
        ("marketo.on_opportunity_delete", "keep"),
        ("marketo.retry_base_ms", "250"),
        ("marketo.max_attempts", "3"),
        ("marketo.http_timeout_secs", "30"),
        ("marketo.max_in_flight", "2"),
        ("marketo.describe_max_age_hours", "0"),
        ("marketo.retry_refused_hours", "0"),
        ("marketo.sample_every_hours", "0"),
        ("dynamics.url", "https://org.example.invalid"),
        ("dynamics.tenant", "tenant.example.invalid"),
        ("dynamics.auth", "ropc"),
        ("dynamics.client_id", "dyn-id"),
        ("dynamics.client_secret", "dyn-secret"),
        ("dynamics.username", "someone@example.invalid"),
        ("dynamics.password", "dyn-password"),
        ("dynamics.token_url", "https://login.example.invalid/token"),
        ("dynamics.page_size", "500"),
        ("dynamics.retry_base_ms", "100"),
        ("dynamics.max_attempts", "2"),
        ("dynamics.http_timeout_secs", "60"),
        ("dynamics.max_pages_per_query", "10"),
        ("rules.customer_contact_role", "Buyer"),
        ("rules.stakeholder_default_role", "Influencer"),
        ("rules.stakeholder_categories", "1000, 1001"),
        ("export.currency", "transaction"),
        ("export.leads", "all_in_scope"),
        ("export.companies", "all_in_scope"),
        ("history.keep_days", "30"),
    ];

    /// The settings the README's Configuration section documents (its first TOML block),
    /// `[mapping.*]` aside.
    fn documented_settings() -> Vec<String> {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        let table: toml::Table = toml::from_str(block).unwrap();
        let mut settings: Vec<String> = table
            .iter()
            .filter(|(section, _)| *section != "mapping")
            .flat_map(|(section, keys)| {
                let keys = keys.as_table().unwrap();
                keys.keys().map(move |key| format!("{section}.{key}"))
            })
            .collect();
        settings.sort();
        settings
    }

    #[test]
    fn every_documented_setting_can_come_from_the_environment_and_wins_over_the_file() {
        let mut listed: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(
            listed,
            documented_settings(),
            "SETTINGS and the README differ"
        );
        let mut tested: Vec<String> = FROM_ENVIRONMENT
            .iter()
            .map(|(s, _)| s.to_string())
            .collect();
        tested.sort();
        assert_eq!(tested, listed, "every setting is tried below");
        // The file sets two settings to their defaults: what changes comes from the environment,
        // and wins over the file.
        let file = "[marketo]\nmax_in_flight = 4\n[rules]\ncustomer_contact_role = \"Customer\"\n";
        let plain = format!("{:?}", load_text(file, &[]).unwrap());
        for (setting, text) in FROM_ENVIRONMENT {
            let name = env_name(setting);
            let config = load_text(file, &[(&name, text)])
                .unwrap_or_else(|err| panic!("{name}={text}: {err:#}"));
            let secret = config
                .secrets()
                .into_iter()
                .find_map(|(name, secret)| (name == *setting).then_some(secret).flatten());
            match secret {
                Some(secret) => assert_eq!(secret.expose(), *text, "{name}"),
                None => assert_ne!(
                    format!("{config:?}"),
                    plain,
                    "{name}={text} changed nothing"
                ),
            }
        }
        let config = load_text(
            file,
            &[("OPPSYNC_RULES_STAKEHOLDER_CATEGORIES", "1000, 1001")],
        );
        assert_eq!(config.unwrap().rules.stakeholder_categories, [1000, 1001]);
        let config = load_text(file, &[("OPPSYNC_RULES_STAKEHOLDER_CATEGORIES", "[7]")]);
        assert_eq!(config.unwrap().rules.stakeholder_categories, [7]);
        let config = load_text(file, &[("MARKETO_MAX_IN_FLIGHT", "7")]).unwrap();
        assert_eq!(config.marketo.max_in_flight, 7);
        // A text setting keeps text that reads as a number; an empty variable is unset.
        let config = load_text(file, &[("OPPSYNC_RULES_CUSTOMER_CONTACT_ROLE", "2024")]).unwrap();
        assert_eq!(config.rules.customer_contact_role, "2024");
        let config = load_text(file, &[("OPPSYNC_EXPORT_CURRENCY", "")]).unwrap();
        assert_eq!(config.export.currency, Currency::Base);
    }

    #[test]
    fn a_bad_value_from_the_environment_is_a_usage_error_naming_the_variable() {
        for (name, text, expected) in [
            (
                "MARKETO_MAX_IN_FLIGHT",
                "four",
                "environment MARKETO_MAX_IN_FLIGHT=\"four\": marketo.max_in_flight",
            ),
            (
                "MARKETO_MAX_IN_FLIGHT",
                "0",
                "environment MARKETO_MAX_IN_FLIGHT: marketo.max_in_flight must be between 1 and 10",
            ),
            (
                "OPPSYNC_EXPORT_CURRENCY",
                "yen",
                "environment OPPSYNC_EXPORT_CURRENCY=\"yen\": export.currency",
            ),
            (
                "OPPSYNC_RULES_STAKEHOLDER_CATEGORIES",
                "stakeholders",
                "OPPSYNC_RULES_STAKEHOLDER_CATEGORIES",
            ),
            (
                "DYNAMICS_PAGE_SIZE",
                "9000",
                "environment DYNAMICS_PAGE_SIZE: dynamics.page_size must be between 1 and 5000",
            ),
        ] {
            let err = load_text("", &[(name, text)]).unwrap_err();
            let message = format!("{err:#}");
            assert!(crate::exit::is_usage(&err), "{message}");
            assert!(message.contains(expected), "{name}={text}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
        // The file's own bad value still names the file, with the environment set or not.
        let huge = "[marketo]\nrate_limit_window_secs = 18446744073709551615\n";
        for env in [&[][..], &[("MARKETO_RATE_LIMIT_CALLS", "50")]] {
            let err = load_text("[marketo]\nmax_in_flight = 0\n", env).unwrap_err();
            assert!(
                format!("{err:#}").contains("oppsync.toml: marketo.max_in_flight"),
                "{err:#}"
            );
            let err = load_text(huge, env).unwrap_err();
            assert!(crate::exit::is_usage(&err), "{err:#}");
            assert!(format!("{err:#}").contains("oppsync.toml"), "{err:#}");
        }
    }

    #[test]
    fn an_unknown_key_is_a_usage_error_naming_it_and_its_line() {
        let err = load_text("[rules]\ncustomer_role = \"Buyer\"\n", &[]).unwrap_err();
        let message = format!("{err:#}");
        assert!(crate::exit::is_usage(&err));
        assert!(message.contains("customer_role"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn a_bad_value_is_a_usage_error_naming_the_setting() {
        let err = load_text("[dynamics]\npage_size = 9000\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("dynamics.page_size"));
        let err = load_text("[rules]\nstakeholder_categories = []\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("rules.stakeholder_categories"));
        let err = load_text("[marketo]\non_opportunity_delete = \"archive\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("archive"));
    }

    /// A secret too short to be real would be cut out of ordinary text wherever oppsync prints
    /// or stores it: refused, naming the setting and where it came from but not its value.
    #[test]
    fn a_secret_too_short_to_be_real_is_refused_without_showing_it() {
        for (text, env, expected, value) in [
            (
                "[marketo]\nclient_secret = \"y\"\n",
                &[][..],
                "oppsync.toml: marketo.client_secret has 1 character,",
                "\"y\"",
            ),
            (
                "[dynamics]\npassword = \" hunter2 \"\n",
                &[][..],
                "oppsync.toml: dynamics.password has 7 characters,",
                "hunter2",
            ),
            (
                "",
                &[("DYNAMICS_CLIENT_SECRET", "abc")][..],
                "environment DYNAMICS_CLIENT_SECRET: dynamics.client_secret has 3 characters,",
                "abc",
            ),
        ] {
            let err = load_text(text, env).unwrap_err();
            let message = format!("{err:#}");
            assert!(crate::exit::is_usage(&err), "{message}");
            assert!(message.contains(expected), "{message}");
            assert!(
                !message.contains(value),
                "the value is not shown: {message}"
            );
        }
        // Eight characters, as the shortest Entra ID password, are a secret.
        let config = load_text("[dynamics]\npassword = \"8-chars!\"\n", &[]).unwrap();
        assert_eq!(config.dynamics.password.unwrap().expose(), "8-chars!");
    }

    #[test]
    fn mappings_are_validated_by_name() {
        let config = load_text(
            "[mapping.opportunity]\nexpectedRevenue = \"estimatedvalue\"\nforecastCategoryName = \"msdyn_forecastcategory@OData.Community.Display.V1.FormattedValue\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.mapping.of(Object::Opportunity).len(), 2);
        for (text, setting) in [
            (
                "[mapping.opportunity]\n\"bad name\" = \"name\"\n",
                "mapping.opportunity.bad name",
            ),
            (
                "[mapping.company]\nsicCode = \"x'); drop table account; --\"\n",
                "mapping.company.sicCode",
            ),
            (
                "[mapping.lead]\nemail = \"emailaddress2\"\n",
                "mapping.lead.email",
            ),
        ] {
            let err = load_text(text, &[]).unwrap_err();
            assert!(crate::exit::is_usage(&err));
            assert!(format!("{err:#}").contains(setting), "{err:#}");
        }
        let err = load_text("[mapping.role]\nx = \"y\"\n", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("role"), "{err:#}");
    }

    #[test]
    fn a_missing_explicit_file_or_a_folder_is_a_usage_error_saying_which() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/oppsync.toml")), &|_| None)
            .unwrap_err();
        assert!(crate::exit::is_usage(&err));
        assert_eq!(
            format!("{err:#}"),
            "config file /nonexistent/oppsync.toml does not exist"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load_with_env(Some(dir.path()), &|_| None).unwrap_err();
        assert!(crate::exit::is_usage(&err));
        assert_eq!(
            format!("{err:#}"),
            format!("config file {} is not a file", dir.path().display())
        );
    }

    mod properties {
        //! Random `oppsync.toml` files: whatever the file says, loading it never panics, and a
        //! refusal is a usage error (exit 2) on one line.

        use proptest::prelude::*;

        const TABLES: &[&str] = &[
            "export",
            "marketo",
            "dynamics",
            "rules",
            "mapping.opportunity",
            "mapping.lead",
            "mapping.company",
            "mapping.role",
            "other",
        ];
        const KEYS: &[&str] = &[
            "base_url",
            "client_id",
            "client_secret",
            "rate_limit_calls",
            "rate_limit_window_secs",
            "retry_base_ms",
            "max_attempts",
            "http_timeout_secs",
            "on_opportunity_delete",
            "url",
            "tenant",
            "auth",
            "token_url",
            "page_size",
            "max_pages_per_query",
            "customer_contact_role",
            "stakeholder_default_role",
            "stakeholder_categories",
            "expectedRevenue",
            "currency",
            "leads",
            "companies",
            "x",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                Just("18446744073709551615".to_string()),
                Just("0".to_string()),
                Just("-1".to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                any::<f64>().prop_map(|f| format!("{f:?}")),
                "[a-zA-Z0-9_@.:/ ']{0,16}".prop_map(|s| format!("{s:?}")),
                Just("\"delete\"".to_string()),
                Just("\"ropc\"".to_string()),
                Just("\"all_in_scope\"".to_string()),
                Just("\"transaction\"".to_string()),
                prop::collection::vec(any::<i32>(), 0..3).prop_map(|v| format!("{v:?}")),
                Just("{ a = 1 }".to_string()),
            ]
        }

        fn file() -> impl Strategy<Value = String> {
            prop::collection::vec(
                (
                    prop::sample::select(TABLES),
                    prop::collection::vec((prop::sample::select(KEYS), value()), 0..4),
                ),
                0..4,
            )
            .prop_map(|tables| {
                let mut text = String::new();
                for (table, entries) in tables {
                    text.push_str(&format!("[{table}]\n"));
                    for (key, value) in entries {
                        text.push_str(&format!("{key} = {value}\n"));
                    }
                }
                text
            })
        }

        fn check(text: &str) -> Result<(), TestCaseError> {
            if let Err(err) = super::load_text(text, &[]) {
                prop_assert!(crate::exit::is_usage(&err), "{err:#}");
                prop_assert!(!format!("{err:#}").contains('\n'), "{err:#}");
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            #[test]
            fn random_config_files_load_or_are_usage_errors(text in file()) {
                check(&text)?;
            }

            #[test]
            fn random_text_loads_or_is_a_usage_error(text in "\\PC{0,60}") {
                check(&text)?;
            }
        }
    }
}
