//! A Marketo REST API simulator for rehearsals and tests, on 127.0.0.1 only.
//!
//! It serves what the exporter uses, as the reference describes it: the identity endpoint
//! (client credentials, the same token re-issued with a shrinking `expires_in`), sales persons,
//! leads, companies, opportunities and opportunity roles (sync, query with `GET` or `POST
//! ?_method=GET`, describe, delete), 718 for an `externalSalesPersonId` Marketo does not know,
//! 1018 on the opportunity, company, role and sales person APIs of an instance that runs
//! Marketo's native CRM sync (`native_crm_sync`), the response envelope (`requestId`, `success`, `result`,
//! `errors` only on failure, `seq` on non-lead objects, records in input order, skipped records
//! with `reasons` and no id), and the limits: 300 records per call, 1 MB bodies (HTTP 413),
//! 8 KB URIs (HTTP 414), a sliding 100 calls per 20 s (606), 10 calls in flight (615), a daily
//! quota (607), tokens that expire (601 unknown, 602 expired), duplicate keys in a batch (1036),
//! unknown fields (1006), bad values (1003), roles needing an existing opportunity and lead.
//! Faults can be injected at random (`transient_rate`) or queued through `POST /sim/faults`;
//! `GET /sim/state` shows every stored record and counter.
//!
//! Record-level codes Marketo does not document for these objects are chosen by analogy and
//! marked "unconfirmed" below, so that a rehearsal never relies on them silently.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{self, Request, Response, Server};

/// The simulator's switches; `oppsync sim marketo --help` documents each.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl: Duration,
    pub rate_limit_calls: usize,
    pub rate_limit_window: Duration,
    pub concurrency: usize,
    pub daily_quota: u64,
    pub max_batch: usize,
    pub max_body: usize,
    pub latency: Duration,
    /// Probability in [0, 1] that a REST call fails with a transient error (604, 608, 611, 713
    /// in the body, or HTTP 502).
    pub transient_rate: f64,
    pub seed: u64,
    /// The instance runs Marketo's native CRM sync, which switches off the opportunity,
    /// company, role and sales person APIs (1018).
    pub native_crm_sync: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            client_id: "oppsync-sim".into(),
            client_secret: "oppsync-sim-secret".into(),
            token_ttl: Duration::from_secs(3600),
            rate_limit_calls: 100,
            rate_limit_window: Duration::from_secs(20),
            concurrency: 10,
            daily_quota: 50_000,
            max_batch: 300,
            max_body: 1_000_000,
            latency: Duration::ZERO,
            transient_rate: 0.0,
            seed: 0,
            native_crm_sync: false,
        }
    }
}

/// A running simulator; stops when dropped.
pub struct MarketoSim {
    sim: Arc<Sim>,
    server: Server,
}

impl MarketoSim {
    /// Starts on `127.0.0.1:port` (0 for a free port).
    pub fn start(port: u16, config: SimConfig) -> Result<MarketoSim> {
        let sim = Arc::new(Sim::new(config));
        let serving = Arc::clone(&sim);
        let server = Server::start(port, Arc::new(move |req| serving.handle(req)))?;
        Ok(MarketoSim { sim, server })
    }

    /// The base URL to configure as `[marketo] base_url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Everything stored and counted, as `GET /sim/state` shows it.
    pub fn state(&self) -> Value {
        self.sim.state_json()
    }

    /// Serves until the process is stopped.
    pub fn wait(self) {
        self.server.wait();
    }
}

/// A queued fault: the next `count` REST calls fail with `code` in the body, or with HTTP
/// status `http` when that is set; or, with `record_code`, succeed but skip their first record
/// with that record-level code.
#[derive(Debug, Clone, Deserialize)]
struct Fault {
    #[serde(default)]
    record_code: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    http: Option<u16>,
    #[serde(default = "http::one")]
    count: u32,
    /// Only calls whose path contains this are affected (all when absent).
    #[serde(default)]
    path: Option<String>,
}

struct Sim {
    config: SimConfig,
    in_flight: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<(String, Instant)>,
    expired_tokens: Vec<String>,
    window: VecDeque<Instant>,
    daily_calls: u64,
    rest_calls: u64,
    identity_calls: u64,
    rng: u64,
    next_id: i64,
    faults: VecDeque<Fault>,
    leads: BTreeMap<i64, Map<String, Value>>,
    /// Lead ids by lower-cased email: Marketo matches emails without regard to case, and a
    /// scan of every lead per record would make large rehearsals quadratic.
    lead_emails: BTreeMap<String, Vec<i64>>,
    companies: BTreeMap<String, Map<String, Value>>,
    opportunities: BTreeMap<String, Map<String, Value>>,
    roles: BTreeMap<(String, i64, String), Map<String, Value>>,
    sales_persons: BTreeMap<String, Map<String, Value>>,
}

/// The object types, with their describe metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lead,
    Company,
    Opportunity,
    Role,
    SalesPerson,
}

impl Kind {
    fn from_path(path: &str) -> Option<(Kind, &str)> {
        let rest = path.strip_prefix("/rest/v1/")?;
        for (prefix, kind) in [
            ("opportunities/roles", Kind::Role),
            ("opportunities", Kind::Opportunity),
            ("companies", Kind::Company),
            ("leads", Kind::Lead),
            ("salespersons", Kind::SalesPerson),
        ] {
            if let Some(tail) = rest.strip_prefix(prefix)
                && (tail.starts_with('.') || tail.starts_with('/'))
            {
                return Some((kind, tail));
            }
        }
        None
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Lead => "lead",
            Kind::Company => "company",
            Kind::Opportunity => "opportunity",
            Kind::Role => "opportunityRole",
            Kind::SalesPerson => "salesPerson",
        }
    }

    /// Whether an instance with Marketo's native CRM sync switches this API off (1018).
    fn off_under_native_sync(self) -> bool {
        self != Kind::Lead
    }

    fn id_field(self) -> &'static str {
        match self {
            Kind::Lead | Kind::Company | Kind::SalesPerson => "id",
            Kind::Opportunity | Kind::Role => "marketoGUID",
        }
    }

    fn dedupe_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Lead => &["email"],
            Kind::Company => &["externalCompanyId"],
            Kind::Opportunity => &["externalOpportunityId"],
            Kind::Role => &["externalOpportunityId", "leadId", "role"],
            Kind::SalesPerson => &["externalSalesPersonId"],
        }
    }

    fn searchable(self) -> &'static [&'static str] {
        match self {
            Kind::Lead => &["id", "email", "externalCompanyId"],
            Kind::Company => &["externalCompanyId", "id", "company"],
            Kind::Opportunity => &["externalOpportunityId", "marketoGUID", "externalCompanyId"],
            Kind::Role => &["marketoGUID", "leadId", "externalOpportunityId"],
            Kind::SalesPerson => &["externalSalesPersonId", "id", "email"],
        }
    }

    /// (name, dataType, updateable)
    fn fields(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            Kind::Lead => &[
                ("id", "integer", false),
                ("email", "email", true),
                ("firstName", "string", true),
                ("lastName", "string", true),
                ("title", "string", true),
                ("phone", "phone", true),
                ("company", "string", true),
                ("externalCompanyId", "string", true),
                ("externalSalesPersonId", "string", true),
                ("externalPersonId", "string", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::Company => &[
                ("id", "integer", false),
                ("externalCompanyId", "string", false),
                ("company", "string", true),
                ("website", "url", true),
                ("numberOfEmployees", "integer", true),
                ("annualRevenue", "currency", true),
                ("industry", "string", true),
                ("mainPhone", "phone", true),
                ("billingStreet", "string", true),
                ("billingCity", "string", true),
                ("billingState", "string", true),
                ("billingPostalCode", "string", true),
                ("billingCountry", "string", true),
                ("sicCode", "string", true),
                ("site", "string", true),
                ("externalSalesPersonId", "string", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::Opportunity => &[
                ("marketoGUID", "string", false),
                ("externalOpportunityId", "string", false),
                ("name", "string", true),
                ("description", "string", true),
                ("type", "string", true),
                ("stage", "string", true),
                ("amount", "currency", true),
                ("expectedRevenue", "currency", true),
                ("closeDate", "date", true),
                ("isClosed", "boolean", true),
                ("isWon", "boolean", true),
                ("probability", "integer", true),
                ("externalCompanyId", "string", true),
                ("externalSalesPersonId", "string", true),
                ("externalCreatedDate", "datetime", true),
                ("fiscalQuarter", "integer", true),
                ("fiscalYear", "integer", true),
                ("forecastCategory", "string", true),
                ("forecastCategoryName", "string", true),
                ("lastActivityDate", "date", true),
                ("leadSource", "string", true),
                ("nextStep", "string", true),
                ("quantity", "float", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::Role => &[
                ("marketoGUID", "string", false),
                ("externalOpportunityId", "string", false),
                ("leadId", "integer", false),
                ("role", "string", false),
                ("isPrimary", "boolean", true),
                ("externalCreatedDate", "datetime", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
            Kind::SalesPerson => &[
                ("id", "integer", false),
                ("externalSalesPersonId", "string", false),
                ("email", "email", true),
                ("firstName", "string", true),
                ("lastName", "string", true),
                ("phone", "phone", true),
                ("mobilePhone", "phone", true),
                ("fax", "phone", true),
                ("title", "string", true),
                ("createdAt", "datetime", false),
                ("updatedAt", "datetime", false),
            ],
        }
    }
}

type Outcome = Result<Value, (String, String)>;

fn envelope(rng: u64, result: Vec<Value>, more: Option<String>) -> Response {
    let mut body = json!({"requestId": request_id(rng), "result": result, "success": true});
    if let Some(token) = more {
        body["moreResult"] = json!(true);
        body["nextPageToken"] = json!(token);
    }
    Response::json(200, &body)
}

fn failure(rng: u64, code: &str, message: &str) -> Response {
    Response::json(
        200,
        &json!({"requestId": request_id(rng), "success": false, "errors": [{"code": code, "message": message}]}),
    )
}

fn request_id(rng: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{:x}#{:x}", rng & 0xffff, ms)
}

fn skipped(seq: Option<usize>, code: &str, message: &str) -> Value {
    let mut record = json!({"status": "skipped", "reasons": [{"code": code, "message": message}]});
    if let Some(seq) = seq {
        record["seq"] = json!(seq);
    }
    record
}

impl State {
    fn lead_email(&self, id: i64) -> Option<String> {
        self.leads
            .get(&id)?
            .get("email")?
            .as_str()
            .map(str::to_ascii_lowercase)
    }

    fn index_lead(&mut self, id: i64) {
        if let Some(email) = self.lead_email(id) {
            self.lead_emails.entry(email).or_default().push(id);
        }
    }

    fn unindex_lead(&mut self, id: i64) {
        if let Some(email) = self.lead_email(id)
            && let Some(ids) = self.lead_emails.get_mut(&email)
        {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.lead_emails.remove(&email);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic for a given seed, good enough for fault injection.
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn guid(&mut self) -> String {
        let a = self.next_random();
        let b = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Sim {
    fn new(config: SimConfig) -> Sim {
        let seed = if config.seed == 0 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        } else {
            config.seed
        };
        let state = State {
            rng: seed,
            next_id: 1000,
            ..State::default()
        };
        Sim {
            config,
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in one handler must not take the whole simulator down.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn handle(&self, req: Request) -> Response {
        if req.body.len() > self.config.max_body {
            return Response::text(
                413,
                "<html><body><h1>413 Request Entity Too Large</h1></body></html>",
            );
        }
        let uri_length = req.path.len()
            + req
                .query
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if uri_length > 8 * 1024 {
            return Response::text(
                414,
                "<html><body><h1>414 Request-URI Too Large</h1></body></html>",
            );
        }
        match req.path.as_str() {
            "/identity/oauth/token" => return self.identity(&req),
            "/sim/state" => return Response::json(200, &self.state_json()),
            "/sim/faults" if req.method == "POST" => return self.queue_faults(&req),
            _ => {}
        }
        if !req.path.starts_with("/rest/") {
            return Response::json(404, &json!({"error": "not found"}));
        }
        self.rest(req)
    }

    fn identity(&self, req: &Request) -> Response {
        let mut params = req.query.clone();
        if req.method == "POST" {
            params.extend(http::parse_form(&String::from_utf8_lossy(&req.body)));
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut state = self.lock();
        state.identity_calls += 1;
        if get("grant_type") != Some("client_credentials") {
            return Response::json(
                400,
                &json!({"error": "unsupported_grant_type", "error_description": "Only client_credentials is supported"}),
            );
        }
        if get("client_id") != Some(self.config.client_id.as_str()) {
            return Response::json(
                401,
                &json!({"error": "invalid_client", "error_description": "No client with requested id"}),
            );
        }
        if get("client_secret") != Some(self.config.client_secret.as_str()) {
            return Response::json(
                401,
                &json!({"error": "invalid_client", "error_description": "Bad client credentials"}),
            );
        }
        let now = Instant::now();
        let token = match &state.token {
            Some((token, expiry)) if *expiry > now => (token.clone(), *expiry),
            _ => {
                if let Some((old, _)) = state.token.take() {
                    state.expired_tokens.push(old);
                }
                let token = format!("{}:sim", state.guid());
                let expiry = now + self.config.token_ttl;
                state.token = Some((token.clone(), expiry));
                (token, expiry)
            }
        };
        let remaining = token.1.saturating_duration_since(now).as_secs();
        Response::json(200, &json!({"access_token": token.0, "token_type": "bearer", "expires_in": remaining, "scope": "apis@oppsync-sim"}))
            .with_header("Cache-Control", "no-store")
            .with_header("Pragma", "no-cache")
    }

    fn queue_faults(&self, req: &Request) -> Response {
        let faults: Vec<Fault> = http::json_items(&req.body);
        let queued = faults.len();
        self.lock().faults.extend(faults);
        Response::json(200, &json!({"queued": queued}))
    }

    fn state_json(&self) -> Value {
        let state = self.lock();
        json!({
            "leads": state.leads.values().collect::<Vec<_>>(),
            "companies": state.companies.values().collect::<Vec<_>>(),
            "opportunities": state.opportunities.values().collect::<Vec<_>>(),
            "roles": state.roles.values().collect::<Vec<_>>(),
            "sales_persons": state.sales_persons.values().collect::<Vec<_>>(),
            "rest_calls": state.rest_calls,
            "identity_calls": state.identity_calls,
            "daily_calls": state.daily_calls,
            "queued_faults": state.faults.len(),
        })
    }

    /// Every REST call: authentication, injected faults, limits, then the route.
    fn rest(&self, req: Request) -> Response {
        let rng = self.lock().next_random();
        let mut record_fault: Option<String> = None;
        // Authentication first: 601 and 602 do not count against the rate or the quota.
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = bearer else {
            let message = if req.param("access_token").is_some() {
                "Access token invalid (the access_token parameter is no longer accepted; send Authorization: Bearer)"
            } else {
                "Access token invalid"
            };
            return failure(rng, "601", message);
        };
        {
            let mut state = self.lock();
            state.rest_calls += 1;
            match &state.token {
                Some((current, expiry)) if current == token => {
                    if *expiry <= Instant::now() {
                        return failure(rng, "602", "Access token expired");
                    }
                }
                _ if state.expired_tokens.iter().any(|t| t == token) => {
                    return failure(rng, "602", "Access token expired");
                }
                _ => return failure(rng, "601", "Access token invalid"),
            }
            if let Some(position) = state.faults.iter().position(|f| {
                f.path
                    .as_ref()
                    .is_none_or(|p| req.path.contains(p.as_str()))
            }) {
                let fault = state.faults[position].clone();
                if fault.count <= 1 {
                    state.faults.remove(position);
                } else {
                    state.faults[position].count -= 1;
                }
                if let Some(status) = fault.http {
                    return Response::text(
                        status,
                        &format!("<html><body><h1>{status}</h1></body></html>"),
                    );
                }
                if let Some(code) = fault.record_code {
                    record_fault = Some(code);
                } else {
                    let code = fault.code.unwrap_or_else(|| "611".into());
                    return failure(rng, &code, fault_message(&code));
                }
            }
            if self.config.transient_rate > 0.0 {
                let draw = (state.next_random() >> 11) as f64 / (1u64 << 53) as f64;
                if draw < self.config.transient_rate {
                    let pick = state.next_random() % 5;
                    if pick == 4 {
                        return Response::text(
                            502,
                            "<html><body><h1>502 Bad Gateway</h1></body></html>",
                        );
                    }
                    let code = ["604", "608", "611", "713"][pick as usize];
                    return failure(rng, code, fault_message(code));
                }
            }
            if state.daily_calls >= self.config.daily_quota {
                return failure(rng, "607", fault_message("607"));
            }
            let now = Instant::now();
            while state
                .window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.config.rate_limit_window)
            {
                state.window.pop_front();
            }
            if state.window.len() >= self.config.rate_limit_calls {
                return failure(
                    rng,
                    "606",
                    &format!(
                        "Max rate limit '{}' exceeded with in '{}' secs",
                        self.config.rate_limit_calls,
                        self.config.rate_limit_window.as_secs()
                    ),
                );
            }
            state.window.push_back(now);
            state.daily_calls += 1;
        }
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let response = if in_flight > self.config.concurrency {
            failure(
                rng,
                "615",
                &format!(
                    "Concurrent access limit '{}' reached",
                    self.config.concurrency
                ),
            )
        } else {
            if !self.config.latency.is_zero() {
                std::thread::sleep(self.config.latency);
            }
            self.route(&req, rng, record_fault.as_deref())
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        response
    }

    fn route(&self, req: &Request, rng: u64, record_fault: Option<&str>) -> Response {
        let Some((kind, tail)) = Kind::from_path(&req.path) else {
            return failure(rng, "610", "Requested resource not found");
        };
        let content_type = req.header("content-type").unwrap_or("");
        let form = if content_type.contains("application/x-www-form-urlencoded") {
            http::parse_form(&String::from_utf8_lossy(&req.body))
        } else {
            Vec::new()
        };
        // `_method=GET` comes in the query string, or (as recorded from real clients) in the
        // form body.
        let method_get = req
            .query
            .iter()
            .chain(&form)
            .any(|(k, v)| k == "_method" && v.eq_ignore_ascii_case("GET"));
        // `DELETE /rest/v1/leads.json` is what marketorestpython's delete_lead sends; Adobe
        // documents `POST /rest/v1/leads/delete.json` (third-party evidence, accepted as an alias).
        let tail = match (req.method.as_str(), kind, tail) {
            ("DELETE", Kind::Lead, ".json") => "/delete.json",
            _ => tail,
        };
        let method = if req.method == "DELETE" && kind == Kind::Lead {
            "POST"
        } else {
            req.method.as_str()
        };
        // Native CRM sync: reads of companies, opportunities and sales persons work, writes
        // do not, and neither does any role call (the reference's suggestion; unconfirmed).
        let reads = method == "GET" || method_get;
        if self.config.native_crm_sync
            && kind.off_under_native_sync()
            && (kind == Kind::Role || !reads)
        {
            return failure(rng, "1018", "CRM Integration enabled");
        }
        match (method, tail) {
            ("GET", "/describe.json") => self.describe(kind, rng),
            ("GET", ".json") => self.query(kind, &req.query, None, rng),
            ("POST", ".json") if method_get => {
                if content_type.contains("application/json") {
                    match serde_json::from_slice::<Value>(&req.body) {
                        Ok(body) => self.query(kind, &req.query, Some(body), rng),
                        Err(_) => failure(rng, "609", "Invalid JSON"),
                    }
                } else {
                    let mut params = req.query.clone();
                    params.extend(form);
                    self.query(kind, &params, None, rng)
                }
            }
            ("POST", ".json") | ("POST", "/delete.json") => {
                if !content_type.contains("application/json") {
                    return failure(rng, "612", "Invalid Content Type");
                }
                let body: Value = match serde_json::from_slice(&req.body) {
                    Ok(body) => body,
                    Err(_) => return failure(rng, "609", "Invalid JSON"),
                };
                let Some(input) = body.get("input").and_then(Value::as_array) else {
                    return failure(rng, "701", "input cannot be blank");
                };
                if input.len() > self.config.max_batch {
                    // Unconfirmed: the code Marketo uses for more than 300 records.
                    return failure(
                        rng,
                        "1003",
                        &format!("Batch size cannot exceed {}", self.config.max_batch),
                    );
                }
                if tail == ".json" {
                    self.sync(kind, &body, input, rng, record_fault)
                } else {
                    self.delete(kind, &body, input, rng)
                }
            }
            ("GET", _) | ("POST", _) => failure(rng, "610", "Requested resource not found"),
            _ => failure(rng, "605", "HTTP Method not supported"),
        }
    }

    fn describe(&self, kind: Kind, rng: u64) -> Response {
        let fields: Vec<Value> = kind
            .fields()
            .iter()
            .map(|(name, data_type, updateable)| json!({"name": name, "displayName": name, "dataType": data_type, "updateable": updateable}))
            .collect();
        if kind == Kind::Lead {
            let fields: Vec<Value> = kind
                .fields()
                .iter()
                .enumerate()
                .map(|(i, (name, data_type, updateable))| json!({"id": i + 1, "displayName": name, "dataType": data_type, "rest": {"name": name, "readOnly": !updateable}}))
                .collect();
            return envelope(rng, fields, None);
        }
        let searchable: Vec<Value> = kind.searchable().iter().map(|f| json!([f])).collect();
        let mut searchable_fields = vec![json!(kind.dedupe_fields())];
        searchable_fields.extend(searchable);
        envelope(
            rng,
            vec![json!({
                "name": kind.name(),
                "displayName": kind.name(),
                "createdAt": "2024-01-01T00:00:00Z",
                "updatedAt": "2024-01-01T00:00:00Z",
                "idField": kind.id_field(),
                "dedupeFields": kind.dedupe_fields(),
                "searchableFields": searchable_fields,
                "fields": fields,
            })],
            None,
        )
    }

    /// Checks field names and value types against the describe; `Err((code, message))` skips.
    fn validate(
        kind: Kind,
        record: &Map<String, Value>,
        creating: bool,
    ) -> Result<(), (String, String)> {
        for (name, value) in record {
            let Some((_, data_type, updateable)) = kind.fields().iter().find(|(f, _, _)| f == name)
            else {
                return Err(("1006".into(), format!("Field '{name}' not found")));
            };
            if !updateable
                && !creating
                && !kind.dedupe_fields().contains(&name.as_str())
                && *name != kind.id_field()
            {
                return Err(("1003".into(), format!("Field '{name}' is not updateable")));
            }
            let ok = match (*data_type, value) {
                (_, Value::Null) => true,
                ("string" | "email" | "url" | "phone", Value::String(_)) => true,
                ("integer", Value::Number(n)) => n.is_i64(),
                ("integer", Value::String(s)) => s.parse::<i64>().is_ok(),
                ("currency" | "float", Value::Number(_)) => true,
                ("currency" | "float", Value::String(s)) => s.parse::<f64>().is_ok(),
                ("boolean", Value::Bool(_)) => true,
                ("date", Value::String(s)) => {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                }
                ("datetime", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                _ => false,
            };
            if !ok {
                let shown = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return Err((
                    "1003".into(),
                    format!("Invalid value for field '{name}' and value '{shown}'"),
                ));
            }
        }
        Ok(())
    }

    fn sync(
        &self,
        kind: Kind,
        body: &Value,
        input: &[Value],
        rng: u64,
        record_fault: Option<&str>,
    ) -> Response {
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("createOrUpdate");
        if ![
            "createOrUpdate",
            "createOnly",
            "updateOnly",
            "createDuplicate",
        ]
        .contains(&action)
        {
            return failure(rng, "1003", &format!("Invalid action '{action}'"));
        }
        let mut state = self.lock();
        let mut results = Vec::with_capacity(input.len());
        let mut seen_keys: Vec<String> = Vec::new();
        for (seq, item) in input.iter().enumerate() {
            let seq_field = (kind != Kind::Lead).then_some(seq);
            if let (0, Some(code)) = (seq, record_fault) {
                results.push(skipped(seq_field, code, "Injected record-level fault"));
                continue;
            }
            let Some(record) = item.as_object() else {
                results.push(skipped(seq_field, "1003", "Invalid record"));
                continue;
            };
            let outcome = match kind {
                Kind::Lead => Self::sync_lead(&mut state, body, action, record),
                _ => Self::sync_object(&mut state, kind, action, record, &mut seen_keys),
            };
            results.push(match outcome {
                Ok(mut result) => {
                    if let Some(seq) = seq_field {
                        result["seq"] = json!(seq);
                    }
                    result
                }
                Err((code, message)) => skipped(seq_field, &code, &message),
            });
        }
        envelope(rng, results, None)
    }

    fn sync_lead(
        state: &mut State,
        body: &Value,
        action: &str,
        record: &Map<String, Value>,
    ) -> Outcome {
        let lookup = body
            .get("lookupField")
            .and_then(Value::as_str)
            .unwrap_or("email");
        if !["email", "id", "externalCompanyId"].contains(&lookup) {
            return Err((
                "1011".into(),
                format!("Field '{lookup}' not supported for lookup"),
            ));
        }
        Self::validate(Kind::Lead, record, true)?;
        Self::check_sales_person(state, record)?;
        let wanted = record.get(lookup).filter(|v| !v.is_null());
        let matches: Vec<i64> = match wanted {
            None => Vec::new(),
            Some(Value::String(email)) if lookup == "email" => state
                .lead_emails
                .get(&email.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default(),
            Some(value) => state
                .leads
                .iter()
                .filter(|(_, lead)| match (lead.get(lookup), value) {
                    (Some(Value::String(a)), Value::String(b)) => a.eq_ignore_ascii_case(b),
                    (Some(a), b) => a == b,
                    _ => false,
                })
                .map(|(id, _)| *id)
                .collect(),
        };
        if wanted.is_none() && action != "createOnly" && action != "createDuplicate" {
            return Err((
                "1003".into(),
                format!("Lookup field '{lookup}' not specified"),
            ));
        }
        if matches.len() > 1 && action != "createDuplicate" {
            return Err(("1007".into(), "Multiple lead match lookup criteria".into()));
        }
        let now = crate::run::now();
        match (matches.first(), action) {
            (Some(_), "createOnly") => Err(("1005".into(), "Lead already exists".into())),
            (None, "updateOnly") => Err(("1004".into(), "Lead not found".into())),
            (Some(id), _) if action != "createDuplicate" => {
                let id = *id;
                state.unindex_lead(id);
                if let Some(lead) = state.leads.get_mut(&id) {
                    for (k, v) in record {
                        if k != "id" {
                            lead.insert(k.clone(), v.clone());
                        }
                    }
                    lead.insert("updatedAt".into(), json!(now));
                }
                state.index_lead(id);
                Ok(json!({"id": id, "status": "updated"}))
            }
            _ => {
                let id = state.id();
                let mut lead = record.clone();
                lead.insert("id".into(), json!(id));
                lead.insert("createdAt".into(), json!(now));
                lead.insert("updatedAt".into(), json!(now));
                state.leads.insert(id, lead);
                state.index_lead(id);
                Ok(json!({"id": id, "status": "created"}))
            }
        }
    }

    fn sync_object(
        state: &mut State,
        kind: Kind,
        action: &str,
        record: &Map<String, Value>,
        seen: &mut Vec<String>,
    ) -> Outcome {
        let key_values: Vec<Value> = kind
            .dedupe_fields()
            .iter()
            .map(|f| record.get(*f).cloned().unwrap_or(Value::Null))
            .collect();
        if key_values.iter().any(Value::is_null) {
            return Err((
                "1003".into(),
                format!("{} is required", kind.dedupe_fields().join(", ")),
            ));
        }
        let key_text = Value::Array(key_values.clone()).to_string();
        if seen.contains(&key_text) {
            return Err(("1036".into(), "Duplicate object found in input".into()));
        }
        seen.push(key_text);
        let exists = match kind {
            Kind::SalesPerson => state
                .sales_persons
                .contains_key(key_values[0].as_str().unwrap_or_default()),
            Kind::Company => state
                .companies
                .contains_key(key_values[0].as_str().unwrap_or_default()),
            Kind::Opportunity => state
                .opportunities
                .contains_key(key_values[0].as_str().unwrap_or_default()),
            Kind::Role => state.roles.contains_key(&role_key(&key_values)),
            Kind::Lead => false,
        };
        Self::validate(kind, record, !exists)?;
        if kind != Kind::SalesPerson {
            Self::check_sales_person(state, record)?;
        }
        if kind == Kind::Opportunity && record.get("name").is_some_and(Value::is_null)
            || kind == Kind::Opportunity && !exists && record.get("name").is_none()
        {
            return Err(("1003".into(), "The 'name' field must not be null".into()));
        }
        if kind == Kind::Role {
            // A role needs an existing opportunity and lead (unconfirmed code: 1013).
            let opportunity = key_values[0].as_str().unwrap_or_default();
            if !state.opportunities.contains_key(opportunity) {
                return Err((
                    "1013".into(),
                    format!("Opportunity '{opportunity}' not found"),
                ));
            }
            let lead = role_key(&key_values).1;
            if !state.leads.contains_key(&lead) {
                return Err(("1013".into(), format!("Lead '{lead}' not found")));
            }
        }
        match (exists, action) {
            (true, "createOnly") => Err(("1017".into(), "Object already exists".into())),
            (false, "updateOnly") => Err(("1013".into(), "Object not found".into())),
            (exists, _) => {
                let now = crate::run::now();
                let new_id = if exists {
                    None
                } else {
                    Some(match kind {
                        Kind::Company | Kind::SalesPerson => json!(state.id()),
                        _ => json!(state.guid()),
                    })
                };
                let id_field = kind.id_field();
                let stored = match kind {
                    Kind::SalesPerson => state
                        .sales_persons
                        .entry(key_values[0].as_str().unwrap_or_default().to_string())
                        .or_default(),
                    Kind::Company => state
                        .companies
                        .entry(key_values[0].as_str().unwrap_or_default().to_string())
                        .or_default(),
                    Kind::Opportunity => state
                        .opportunities
                        .entry(key_values[0].as_str().unwrap_or_default().to_string())
                        .or_default(),
                    Kind::Role => state.roles.entry(role_key(&key_values)).or_default(),
                    Kind::Lead => unreachable!("leads are synced by sync_lead"),
                };
                for (k, v) in record {
                    stored.insert(k.clone(), v.clone());
                }
                if let Some(id) = new_id {
                    stored.insert(id_field.into(), id);
                    stored.insert("createdAt".into(), json!(now));
                }
                stored.insert("updatedAt".into(), json!(now));
                let id = stored.get(id_field).cloned().unwrap_or(Value::Null);
                Ok(json!({"status": if exists { "updated" } else { "created" }, id_field: id}))
            }
        }
    }

    /// 718: a record may only name a sales person Marketo knows (unconfirmed whether Marketo
    /// fails the record or the whole call; per record here, as oppsync handles either).
    fn check_sales_person(
        state: &State,
        record: &Map<String, Value>,
    ) -> Result<(), (String, String)> {
        match record.get("externalSalesPersonId") {
            Some(Value::String(id)) if !state.sales_persons.contains_key(id) => {
                Err(("718".into(), "ExternalSalesPersonID not found".into()))
            }
            _ => Ok(()),
        }
    }

    fn delete(&self, kind: Kind, body: &Value, input: &[Value], rng: u64) -> Response {
        let by_id = body.get("deleteBy").and_then(Value::as_str) == Some("idField");
        let mut state = self.lock();
        let mut results = Vec::with_capacity(input.len());
        for (seq, item) in input.iter().enumerate() {
            let seq_field = (kind != Kind::Lead).then_some(seq);
            let record = item.as_object().cloned().unwrap_or_default();
            let removed: Option<Value> = match kind {
                Kind::Lead => {
                    let id = record.get("id").and_then(Value::as_i64).unwrap_or_default();
                    state.unindex_lead(id);
                    let removed = state.leads.remove(&id).map(|_| json!(id));
                    state.roles.retain(|(_, lead, _), _| *lead != id);
                    removed
                }
                Kind::SalesPerson => {
                    let key = if by_id {
                        let id = record.get("id").cloned();
                        state
                            .sales_persons
                            .iter()
                            .find(|(_, p)| p.get("id") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        record
                            .get("externalSalesPersonId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    key.and_then(|k| state.sales_persons.remove(&k))
                        .and_then(|p| p.get("id").cloned())
                }
                Kind::Company => {
                    let key = if by_id {
                        let id = record.get("id").cloned();
                        state
                            .companies
                            .iter()
                            .find(|(_, c)| c.get("id") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        record
                            .get("externalCompanyId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    key.and_then(|k| state.companies.remove(&k))
                        .and_then(|c| c.get("id").cloned())
                }
                Kind::Opportunity => {
                    let key = if by_id {
                        let id = record.get("marketoGUID").cloned();
                        state
                            .opportunities
                            .iter()
                            .find(|(_, o)| o.get("marketoGUID") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        record
                            .get("externalOpportunityId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    };
                    let removed = key.as_ref().and_then(|k| state.opportunities.remove(k));
                    if let Some(key) = key.filter(|_| removed.is_some()) {
                        state.roles.retain(|(opp, _, _), _| *opp != key);
                    }
                    removed.and_then(|o| o.get("marketoGUID").cloned())
                }
                Kind::Role => {
                    let key = if by_id {
                        let id = record.get("marketoGUID").cloned();
                        state
                            .roles
                            .iter()
                            .find(|(_, r)| r.get("marketoGUID") == id.as_ref())
                            .map(|(k, _)| k.clone())
                    } else {
                        let values: Vec<Value> = kind
                            .dedupe_fields()
                            .iter()
                            .map(|f| record.get(*f).cloned().unwrap_or(Value::Null))
                            .collect();
                        Some(role_key(&values))
                    };
                    key.and_then(|k| state.roles.remove(&k))
                        .and_then(|r| r.get("marketoGUID").cloned())
                }
            };
            results.push(match removed {
                Some(id) => {
                    let mut result = json!({"status": "deleted", kind.id_field(): id});
                    if let Some(seq) = seq_field {
                        result["seq"] = json!(seq);
                    }
                    result
                }
                None if kind == Kind::Lead => skipped(None, "1004", "Lead not found"),
                None => skipped(seq_field, "1013", "Object not found"),
            });
        }
        envelope(rng, results, None)
    }

    fn query(
        &self,
        kind: Kind,
        params: &[(String, String)],
        json_body: Option<Value>,
        rng: u64,
    ) -> Response {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let batch_size = get("batchSize")
            .and_then(|b| b.parse::<usize>().ok())
            .unwrap_or(300)
            .clamp(1, 300);
        let offset = get("nextPageToken")
            .and_then(|t| {
                t.strip_prefix("sim-")
                    .and_then(|n| usize::from_str_radix(n, 16).ok())
            })
            .unwrap_or(0);
        let state = self.lock();
        let all: Vec<&Map<String, Value>> = match kind {
            Kind::Lead => state.leads.values().collect(),
            Kind::Company => state.companies.values().collect(),
            Kind::Opportunity => state.opportunities.values().collect(),
            Kind::Role => state.roles.values().collect(),
            Kind::SalesPerson => state.sales_persons.values().collect(),
        };
        let (filter_type, fields, matching): (String, Option<String>, Vec<&Map<String, Value>>) =
            if let Some(body) = json_body {
                // Compound-key query: {filterType: "dedupeFields", fields: [...], input: [{...}]}.
                let filter_type = body
                    .get("filterType")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if filter_type != "dedupeFields" {
                    return failure(
                        rng,
                        "1003",
                        &format!("Invalid filterType '{filter_type}' for a JSON query"),
                    );
                }
                let inputs = body
                    .get("input")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let fields = body.get("fields").and_then(Value::as_array).map(|f| {
                    f.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let matching = all
                    .into_iter()
                    .filter(|record| {
                        inputs.iter().any(|input| {
                            kind.dedupe_fields()
                                .iter()
                                .all(|f| loose_eq(record.get(*f), input.get(*f)))
                        })
                    })
                    .collect();
                (filter_type, fields, matching)
            } else {
                let Some(filter_type) = get("filterType") else {
                    return failure(rng, "701", "filterType cannot be blank");
                };
                let Some(values) = get("filterValues") else {
                    return failure(rng, "701", "filterValues cannot be blank");
                };
                let field = match filter_type.as_str() {
                    "idField" => kind.id_field().to_string(),
                    "dedupeFields" if kind.dedupe_fields().len() == 1 => {
                        kind.dedupe_fields()[0].to_string()
                    }
                    other if kind.searchable().contains(&other) => other.to_string(),
                    other => return failure(rng, "1003", &format!("Invalid filterType '{other}'")),
                };
                let values: Vec<&str> = values
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                if values.len() > 300 {
                    return failure(rng, "1003", "Too many filterValues (at most 300)");
                }
                let matching = all
                    .into_iter()
                    .filter(|record| {
                        values
                            .iter()
                            .any(|v| loose_eq(record.get(&field), Some(&json!(v))))
                    })
                    .collect();
                // Clients send a list of fields as one comma list or as repeated keys.
                let fields: Vec<&str> = params
                    .iter()
                    .filter(|(k, _)| k == "fields")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let fields = (!fields.is_empty()).then(|| fields.join(","));
                (filter_type, fields, matching)
            };
        let _ = filter_type;
        let default_fields: Vec<String> = match kind {
            Kind::Lead => [
                "id",
                "email",
                "updatedAt",
                "createdAt",
                "firstName",
                "lastName",
            ]
            .map(String::from)
            .to_vec(),
            _ => {
                let mut f = vec![kind.id_field().to_string()];
                f.extend(kind.dedupe_fields().iter().map(|s| s.to_string()));
                f.extend(["updatedAt".to_string(), "createdAt".to_string()]);
                f
            }
        };
        let fields: Vec<String> = fields
            .map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or(default_fields);
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(batch_size)
            .enumerate()
            .map(|(i, record)| {
                let mut out = Map::new();
                if kind != Kind::Lead {
                    out.insert("seq".into(), json!(offset + i));
                }
                for field in &fields {
                    if let Some(value) = record.get(field) {
                        out.insert(field.clone(), value.clone());
                    }
                }
                Value::Object(out)
            })
            .collect();
        let more = (offset + page.len() < matching.len())
            .then(|| format!("sim-{:x}", offset + page.len()));
        envelope(rng, page, more)
    }
}

fn role_key(values: &[Value]) -> (String, i64, String) {
    let lead = match &values[1] {
        Value::Number(n) => n.as_i64().unwrap_or_default(),
        Value::String(s) => s.parse().unwrap_or_default(),
        _ => 0,
    };
    (
        values[0].as_str().unwrap_or_default().to_string(),
        lead,
        values[2].as_str().unwrap_or_default().to_string(),
    )
}

/// Compares stored and requested values the way query filters do: strings case-insensitively,
/// numbers against their text.
fn loose_eq(stored: Option<&Value>, wanted: Option<&Value>) -> bool {
    match (stored, wanted) {
        (Some(Value::String(a)), Some(Value::String(b))) => a.eq_ignore_ascii_case(b),
        (Some(Value::Number(a)), Some(Value::String(b))) => a.to_string() == *b,
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn fault_message(code: &str) -> &'static str {
    match code {
        "502" => "Bad Gateway",
        "604" => "Request timed out",
        "606" => "Max rate limit '100' exceeded with in '20' secs",
        "607" => "Daily quota reached",
        "608" => "API Temporarily Unavailable",
        "611" => "System error",
        "615" => "Concurrent access limit reached",
        "713" => "Transient Error",
        "603" => "Access denied",
        "601" => "Access token invalid",
        "602" => "Access token expired",
        _ => "Injected fault",
    }
}

#[cfg(test)]
mod tests;
