//! A Dataverse Web API simulator serving a fixture folder, on 127.0.0.1 only.
//!
//! What it reproduces, as the reference describes the real service: an Entra ID style token
//! endpoint (`/<tenant>/oauth2/v2.0/token` and the v1 `/oauth2/token`, client credentials and
//! password grants); `GET /api/data/v9.x/WhoAmI`; `GET /api/data/v9.x/<entityset>` with `$select`
//! (an unknown column is a 400),
//! annotations only when `Prefer: odata.include-annotations` asks, server-driven paging
//! (`odata.maxpagesize`, opaque `$skiptoken` paging cookies in `@odata.nextLink`), change
//! tracking (`odata.track-changes`: a `@odata.deltaLink` on the last page; a delta request
//! returns what changed between versions, deletes as `$deletedEntity` rows; `$filter` refused
//! with it), `modifiedon gt` filters for tables without change tracking, 429 with `Retry-After`,
//! and 401 for a missing, unknown or expired token.
//!
//! The folder is version 1; `--next DIR` applies a second folder (upserts and deletes) as
//! version 2, made current by `POST /sim/advance`. `POST /sim/expire-deltas` makes every delta
//! token issued so far expired (the error code is third-party evidence, see the reference);
//! `POST /sim/faults` queues `{"status": 429|401|503, "retry_after": s, "path": "...", "count": n}`;
//! `GET /sim/state` shows the version, tables and counters.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{self, Request, Response, Server};
use crate::source::{fixtures, page};
use crate::stage;

type Table = BTreeMap<String, Map<String, Value>>;
type Version = BTreeMap<String, Table>;

/// The simulator's switches; `oppsync sim dynamics --help` documents each.
#[derive(Debug, Clone)]
pub struct DynamicsSimConfig {
    pub fixtures: PathBuf,
    pub next: Option<PathBuf>,
    pub page_size: usize,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub token_ttl: Duration,
    /// Answer `expires_in` as a string, as the v1 endpoint does.
    pub expires_in_as_string: bool,
    /// Every Nth Web API request gets 429 (0: never).
    pub throttle_every: u64,
    pub retry_after_secs: u64,
    /// Entity sets whose table has change tracking off: no delta link is ever returned.
    pub no_change_tracking: Vec<String>,
    pub latency: Duration,
}

impl DynamicsSimConfig {
    pub fn new(fixtures: PathBuf) -> DynamicsSimConfig {
        DynamicsSimConfig {
            fixtures,
            next: None,
            page_size: 5000,
            client_id: "oppsync-sim".into(),
            client_secret: "oppsync-sim-secret".into(),
            username: "sync@oppsync-sim.example".into(),
            password: "oppsync-sim-password".into(),
            token_ttl: Duration::from_secs(3600),
            expires_in_as_string: false,
            throttle_every: 0,
            retry_after_secs: 1,
            no_change_tracking: Vec::new(),
            latency: Duration::ZERO,
        }
    }
}

/// A running simulator; stops when dropped.
pub struct DynamicsSim {
    sim: Arc<Sim>,
    server: Server,
}

impl DynamicsSim {
    /// Loads the fixture folders and starts on `127.0.0.1:port` (0 for a free port).
    pub fn start(port: u16, config: DynamicsSimConfig) -> Result<DynamicsSim> {
        let first = load(&config.fixtures, &Version::new())?;
        let mut versions = vec![Version::new(), first];
        if let Some(next) = &config.next {
            let second = load(next, &versions[1])?;
            versions.push(second);
        }
        let sim = Arc::new(Sim {
            config,
            state: Mutex::new(State {
                versions,
                current: 1,
                ..State::default()
            }),
        });
        let serving = Arc::clone(&sim);
        let server = Server::start(port, Arc::new(move |req| serving.handle(req)))?;
        Ok(DynamicsSim { sim, server })
    }

    /// The org URL to configure as `[dynamics] url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn state(&self) -> Value {
        self.sim.state_json()
    }

    pub fn wait(self) {
        self.server.wait();
    }
}

/// Applies every page below `dir` on top of `base`: upserts merge, deletes remove.
fn load(dir: &std::path::Path, base: &Version) -> Result<Version> {
    let mut version = base.clone();
    for file in fixtures::page_files(dir)? {
        let source = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {source}"))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let parsed = page::parse(&source, &text, name.as_deref())?;
        for raw in parsed.records {
            let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(raw.get()) else {
                continue;
            };
            let context = record.remove("@odata.context");
            if let Some(deleted) = context
                .as_ref()
                .and_then(Value::as_str)
                .and_then(page::deleted_entity_set)
            {
                let set = deleted
                    .or_else(|| parsed.entity_set.clone())
                    .unwrap_or_default();
                if let (Some(table), Some(id)) = (
                    version.get_mut(&set),
                    record.get("id").and_then(Value::as_str),
                ) {
                    table.remove(&id.to_ascii_lowercase());
                }
                continue;
            }
            let Some(spec) = parsed.entity_set.as_deref().and_then(stage::spec_for) else {
                continue;
            };
            let Some(id) = record
                .get(spec.key)
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
            else {
                continue;
            };
            let stored = version
                .entry(spec.entity_set.to_string())
                .or_default()
                .entry(id)
                .or_default();
            for (key, value) in record {
                stored.insert(key, value);
            }
        }
    }
    Ok(version)
}

#[derive(Debug, Clone, Deserialize)]
struct Fault {
    status: u16,
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default = "http::one")]
    count: u32,
}

#[derive(Default)]
struct State {
    versions: Vec<Version>,
    current: usize,
    /// Delta tokens carry the epoch they were issued in; `POST /sim/expire-deltas` starts a new
    /// one, so every token issued before it is expired and every token issued after it works.
    delta_epoch: usize,
    tokens: BTreeMap<String, Instant>,
    next_token: u64,
    requests: u64,
    throttled: u64,
    token_requests: u64,
    faults: VecDeque<Fault>,
}

struct Sim {
    config: DynamicsSimConfig,
    state: Mutex<State>,
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn handle(&self, req: Request) -> Response {
        let path = req.path.clone();
        match (req.method.as_str(), path.as_str()) {
            ("POST", p) if p.ends_with("/oauth2/v2.0/token") || p.ends_with("/oauth2/token") => {
                self.token(&req)
            }
            ("GET", "/sim/state") => Response::json(200, &self.state_json()),
            ("POST", "/sim/advance") => {
                let mut state = self.lock();
                state.current = (state.current + 1).min(state.versions.len() - 1);
                Response::json(200, &json!({"version": state.current}))
            }
            ("POST", "/sim/expire-deltas") => {
                let mut state = self.lock();
                state.delta_epoch += 1;
                Response::json(200, &json!({"delta_epoch": state.delta_epoch}))
            }
            ("POST", "/sim/faults") => {
                let faults: Vec<Fault> = http::json_items(&req.body);
                let queued = faults.len();
                self.lock().faults.extend(faults);
                Response::json(200, &json!({"queued": queued}))
            }
            ("GET", p) if p.starts_with("/api/data/v9.") => self.web_api(&req),
            _ => error(
                404,
                "0x80060888",
                &format!("Resource not found for the segment '{path}'."),
            ),
        }
    }

    fn state_json(&self) -> Value {
        let state = self.lock();
        let tables: BTreeMap<&String, usize> = state.versions[state.current]
            .iter()
            .map(|(k, v)| (k, v.len()))
            .collect();
        json!({
            "version": state.current,
            "versions": state.versions.len() - 1,
            "tables": tables,
            "requests": state.requests,
            "throttled": state.throttled,
            "token_requests": state.token_requests,
        })
    }

    fn token(&self, req: &Request) -> Response {
        let form = http::parse_form(&String::from_utf8_lossy(&req.body));
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let mut state = self.lock();
        state.token_requests += 1;
        if get("client_id") != self.config.client_id {
            return Response::json(
                400,
                &json!({"error": "unauthorized_client", "error_description": format!("AADSTS700016: Application with identifier '{}' was not found in the directory.", get("client_id"))}),
            );
        }
        match get("grant_type") {
            "client_credentials" if get("client_secret") == self.config.client_secret => {}
            "client_credentials" => {
                return Response::json(
                    401,
                    &json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
                );
            }
            "password"
                if get("username") == self.config.username
                    && get("password") == self.config.password => {}
            "password" => {
                return Response::json(
                    400,
                    &json!({"error": "invalid_grant", "error_description": "AADSTS50126: Error validating credentials due to invalid username or password."}),
                );
            }
            other => {
                return Response::json(
                    400,
                    &json!({"error": "unsupported_grant_type", "error_description": format!("AADSTS70003: grant_type '{other}' is not supported.")}),
                );
            }
        }
        if req.path.ends_with("/v2.0/token") && !get("scope").ends_with("/.default") {
            return Response::json(
                400,
                &json!({"error": "invalid_scope", "error_description": "AADSTS70011: The provided value for scope is not valid; use <org url>/.default."}),
            );
        }
        state.next_token += 1;
        let token = format!("sim-dataverse-token-{}", state.next_token);
        state
            .tokens
            .insert(token.clone(), Instant::now() + self.config.token_ttl);
        let ttl = self.config.token_ttl.as_secs();
        let expires_in = if self.config.expires_in_as_string {
            json!(ttl.to_string())
        } else {
            json!(ttl)
        };
        Response::json(
            200,
            &json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": token}),
        )
    }

    fn web_api(&self, req: &Request) -> Response {
        let (set, version_segment) = {
            let rest = req.path.trim_start_matches("/api/data/");
            let (version, set) = rest.split_once('/').unwrap_or((rest, ""));
            (set.to_string(), version.to_string())
        };
        let base = format!(
            "http://{}/api/data/{version_segment}",
            req.header("host").unwrap_or("127.0.0.1")
        );
        {
            let mut state = self.lock();
            state.requests += 1;
            if let Some(position) = state
                .faults
                .iter()
                .position(|f| f.path.as_ref().is_none_or(|p| set.contains(p.as_str())))
            {
                let fault = state.faults[position].clone();
                if fault.count <= 1 {
                    state.faults.remove(position);
                } else {
                    state.faults[position].count -= 1;
                }
                match fault.status {
                    429 => {
                        state.throttled += 1;
                        return throttled(
                            fault.retry_after.unwrap_or(self.config.retry_after_secs),
                        );
                    }
                    401 => state.tokens.clear(),
                    status => return error(status, "0x80040216", "An unexpected error occurred."),
                }
            }
            let bearer = req
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            match state.tokens.get(bearer) {
                Some(expiry) if *expiry > Instant::now() => {}
                _ => {
                    return error(401, "0x8006088a", "The user is not authenticated: the access token is missing, unknown or expired.")
                        .with_header("WWW-Authenticate", "Bearer authorization_uri=https://login.microsoftonline.com/oppsync-sim/oauth2/authorize, resource_id=oppsync-sim");
                }
            }
            if self.config.throttle_every > 0
                && state.requests.is_multiple_of(self.config.throttle_every)
            {
                state.throttled += 1;
                return throttled(self.config.retry_after_secs);
            }
        }
        if !self.config.latency.is_zero() {
            std::thread::sleep(self.config.latency);
        }
        if set == "WhoAmI" {
            // The caller's identity, as Dataverse's WhoAmI function answers it (`check` asks).
            return Response::json(
                200,
                &json!({
                    "@odata.context": format!("{base}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"),
                    "BusinessUnitId": "00000000-0000-4000-8000-00000000b001",
                    "UserId": "00000000-0000-4000-8000-00000000a001",
                    "OrganizationId": "00000000-0000-4000-8000-00000000c001"
                }),
            );
        }
        let Some(spec) = stage::spec_for(&set) else {
            return error(
                404,
                "0x8006088a",
                &format!("Resource not found for the segment '{set}'."),
            );
        };
        let prefer = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("prefer"))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let annotations = prefer.contains("odata.include-annotations");
        let tracking = prefer.contains("odata.track-changes")
            && !self.config.no_change_tracking.iter().any(|s| s == &set);
        let page_size = prefer
            .split(',')
            .find_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(5000)
            .clamp(1, 5000)
            .min(self.config.page_size.max(1));
        let filter = req.param("$filter").map(str::to_string);
        if filter.is_some() && prefer.contains("odata.track-changes") {
            return error(
                400,
                "0x80060888",
                "The \"$filter\" query parameter isn't supported when Change Tracking is enabled.",
            );
        }
        let state = self.lock();
        let current = &state.versions[state.current];
        let empty = Table::new();
        let table = current.get(&set).unwrap_or(&empty);
        let known = known_columns(spec, table);
        let select: Vec<String> = match req.param("$select") {
            Some(list) => list
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            None => Vec::new(),
        };
        if let Some(unknown) = select.iter().find(|c| !known.contains(c.as_str())) {
            return error(
                400,
                "0x80060888",
                &format!(
                    "Could not find a property named '{unknown}' on type 'Microsoft.Dynamics.CRM.{}'.",
                    spec.table
                ),
            );
        }
        // The rows of this query: current records, or the changes since a delta token.
        // `v<version>e<epoch>!<issued>`; anything else reads as version 0, which is refused.
        let delta_from = req.param("$deltatoken").map(|t| {
            let stamp = t.split('!').next().unwrap_or("").trim_start_matches('v');
            let (version, epoch) = stamp.split_once('e').unwrap_or((stamp, "0"));
            (
                version.parse::<usize>().unwrap_or(0),
                epoch.parse::<usize>().unwrap_or(0),
            )
        });
        let mut rows: Vec<Value> = Vec::new();
        if let Some((from, epoch)) = delta_from {
            if epoch != state.delta_epoch || from == 0 || from > state.current {
                return error(
                    400,
                    "0x80044352",
                    "Version stamp associated with the client has expired. Please perform a full sync.",
                );
            }
            let old = state.versions[from].get(&set).unwrap_or(&empty);
            for (id, record) in table {
                if old.get(id) != Some(record) {
                    rows.push(Value::Object(project(spec, record, &select, annotations)));
                }
            }
            for id in old.keys().filter(|id| !table.contains_key(*id)) {
                rows.push(json!({"@odata.context": format!("{base}/$metadata#{set}/$deletedEntity"), "id": id, "reason": "deleted"}));
            }
        } else {
            let since = match filter.as_deref() {
                None => None,
                Some(f) => match f.strip_prefix("modifiedon gt ") {
                    Some(date) => Some(date.trim().to_string()),
                    None => {
                        return error(
                            400,
                            "0x80060888",
                            &format!(
                                "The simulator supports only `modifiedon gt <date>` filters, not `{f}`."
                            ),
                        );
                    }
                },
            };
            let mut records: Vec<&Map<String, Value>> = table
                .values()
                .filter(|r| {
                    since.as_ref().is_none_or(|d| {
                        r.get("modifiedon")
                            .and_then(Value::as_str)
                            .is_some_and(|m| m > d.as_str())
                    })
                })
                .collect();
            if req
                .param("$orderby")
                .is_some_and(|o| o.starts_with("modifiedon"))
            {
                records.sort_by(|a, b| {
                    a.get("modifiedon")
                        .and_then(Value::as_str)
                        .cmp(&b.get("modifiedon").and_then(Value::as_str))
                });
            }
            rows = records
                .into_iter()
                .map(|r| Value::Object(project(spec, r, &select, annotations)))
                .collect();
        }
        let offset = req
            .param("$skiptoken")
            .and_then(|t| t.split("pagingcookie=\"").nth(1))
            .and_then(|t| t.split('"').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let end = (offset + page_size).min(rows.len());
        let page: Vec<Value> = rows
            .get(offset..end)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let selected = if select.is_empty() {
            String::new()
        } else {
            format!("({})", select.join(","))
        };
        let mut body = json!({"@odata.context": format!("{base}/$metadata#{set}{selected}{}", if delta_from.is_some() { "/$delta" } else { "" })});
        if annotations && delta_from.is_none() {
            body["@Microsoft.Dynamics.CRM.totalrecordcount"] = json!(-1);
            body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = json!(false);
        }
        body["value"] = Value::Array(page);
        let mut query: Vec<(String, String)> = req
            .query
            .iter()
            .filter(|(k, _)| k != "$skiptoken")
            .cloned()
            .collect();
        if end < rows.len() {
            let cookie = format!(
                "<cookie pagenumber=\"{}\" pagingcookie=\"{end}\" istracking=\"{}\" />",
                end / page_size + 1,
                if tracking { "True" } else { "False" }
            );
            query.push(("$skiptoken".into(), cookie));
            body["@odata.nextLink"] = json!(format!("{base}/{set}?{}", encode_query(&query)));
        } else if tracking {
            let mut query: Vec<(String, String)> = query
                .into_iter()
                .filter(|(k, _)| k != "$deltatoken")
                .collect();
            query.push((
                "$deltatoken".into(),
                format!(
                    "v{}e{}!{}",
                    state.current,
                    state.delta_epoch,
                    chrono::Utc::now().format("%m/%d/%Y %H:%M:%S")
                ),
            ));
            body["@odata.deltaLink"] = json!(format!("{base}/{set}?{}", encode_query(&query)));
        }
        let mut applied = Vec::new();
        if annotations {
            applied.push("odata.include-annotations=\"*\"".to_string());
        }
        applied.push(format!("odata.maxpagesize={page_size}"));
        if tracking {
            applied.push("odata.track-changes".to_string());
        }
        Response::json(200, &body)
            .with_header("OData-Version", "4.0")
            .with_header("Preference-Applied", &applied.join(","))
    }
}

fn throttled(retry_after: u64) -> Response {
    error(
        429,
        "0x80072322",
        "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    )
    .with_header("Retry-After", &retry_after.to_string())
}

/// Columns a query may select: what oppsync's staging reads (except the custom
/// `new_synctomkto`, which exists only where an org created it) and what the fixtures hold.
fn known_columns(spec: &stage::EntitySpec, table: &Table) -> std::collections::BTreeSet<String> {
    let mut known: std::collections::BTreeSet<String> = spec
        .select_columns()
        .into_iter()
        .filter(|c| *c != "new_synctomkto")
        .map(str::to_string)
        .collect();
    for record in table.values() {
        known.extend(record.keys().filter(|k| !k.contains('@')).cloned());
    }
    known
}

/// The record as the Web API returns it for `$select`: the key, the selected columns (null
/// when absent), their annotations when asked for, and the etag.
fn project(
    spec: &stage::EntitySpec,
    record: &Map<String, Value>,
    select: &[String],
    annotations: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(etag) = record.get("@odata.etag") {
        out.insert("@odata.etag".into(), etag.clone());
    }
    let wanted =
        |key: &str| select.is_empty() || key == spec.key || select.iter().any(|s| s == key);
    for (key, value) in record {
        match key.split_once('@') {
            Some(("", _)) => {}
            Some((base, _)) if annotations && wanted(base) => {
                out.insert(key.clone(), value.clone());
            }
            Some(_) => {}
            None if wanted(key) => {
                out.insert(key.clone(), value.clone());
            }
            None => {}
        }
    }
    for column in select {
        out.entry(column.clone()).or_insert(Value::Null);
    }
    out
}

fn encode_query(query: &[(String, String)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'$' | b',' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
