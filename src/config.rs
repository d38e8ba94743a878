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
                return Err(usage(format!(
                    "config file {} does not exist",
                    path.display()
                )));
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
                (parse(&path, text)?, ConfigSource::File(path))
            }
            None => (Config::default(), ConfigSource::Defaults),
        };
        config.apply_env(env);
        config.validate(&source)?;
        config.register_secrets();
        Ok((config, source))
    }

    /// Tells the redactor every configured secret, so that no server can make oppsync print
    /// or store one by quoting it back.
    fn register_secrets(&self) {
        for secret in [
            &self.marketo.client_secret,
            &self.dynamics.client_secret,
            &self.dynamics.password,
        ]
        .into_iter()
        .flatten()
        {
            crate::redact::register(secret.expose());
        }
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let set = |target: &mut Option<String>, name: &str| {
            if let Some(value) = env(name).filter(|v| !v.is_empty()) {
                *target = Some(value);
            }
        };
        let set_secret = |target: &mut Option<Secret>, name: &str| {
            if let Some(value) = env(name).filter(|v| !v.is_empty()) {
                *target = Some(Secret(value));
            }
        };
        set(&mut self.marketo.base_url, "MARKETO_BASE_URL");
        set(&mut self.marketo.client_id, "MARKETO_CLIENT_ID");
        set_secret(&mut self.marketo.client_secret, "MARKETO_CLIENT_SECRET");
        set(&mut self.dynamics.url, "DYNAMICS_URL");
        set(&mut self.dynamics.tenant, "DYNAMICS_TENANT");
        set(&mut self.dynamics.client_id, "DYNAMICS_CLIENT_ID");
        set_secret(&mut self.dynamics.client_secret, "DYNAMICS_CLIENT_SECRET");
        set(&mut self.dynamics.username, "DYNAMICS_USERNAME");
        set_secret(&mut self.dynamics.password, "DYNAMICS_PASSWORD");
        set(&mut self.dynamics.token_url, "DYNAMICS_TOKEN_URL");
    }

    fn validate(&self, source: &ConfigSource) -> Result<()> {
        let origin = match source {
            ConfigSource::File(path) => format!("config {}", path.display()),
            ConfigSource::Defaults => "configuration".to_string(),
        };
        let bad = |setting: &str, why: &str| Err(usage(format!("{origin}: {setting} {why}")));
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
        let m = &self.marketo;
        let d = &self.dynamics;
        // Every number that becomes a duration or a count is bounded here, so that no setting
        // can overflow the arithmetic that uses it.
        let bounded: [(&str, u64, u64, u64, &str); 13] = [
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
                ("MARKETO_CLIENT_SECRET", "s3cret"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.marketo.base_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            config.marketo.client_secret.as_ref().unwrap().expose(),
            "s3cret"
        );
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "Debug must not show secrets"
        );
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
    fn a_missing_explicit_file_is_a_usage_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/oppsync.toml")), &|_| None)
            .unwrap_err();
        assert!(crate::exit::is_usage(&err));
        assert!(format!("{err:#}").contains("/nonexistent/oppsync.toml"));
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
