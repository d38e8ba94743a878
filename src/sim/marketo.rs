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
//! `POST /sim/fields` deletes a field from an object (or restores it), as an administrator can;
//! `GET /sim/state` shows every stored record and counter.
//!
//! Record-level codes Marketo does not document for these objects are chosen by analogy and
//! marked "unconfirmed" below, so that a rehearsal never relies on them silently.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{self, Request, Response, Server};

// By concern: authentication and limits, schema and describe, sync, delete, query. This file
// holds the state they share and the routing.
mod auth;
mod delete;
mod query;
mod schema;
mod sync;

use schema::Kind;

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
    /// Up to this much more latency, drawn per call, so that calls overtake one another.
    pub latency_jitter: Duration,
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
            latency_jitter: Duration::ZERO,
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
    /// The most REST calls ever in flight at once, for `/sim/state`.
    in_flight_peak: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<(String, Instant)>,
    expired_tokens: Vec<String>,
    window: VecDeque<Instant>,
    daily_calls: u64,
    rest_calls: u64,
    /// Calls answered 606 (rate) and 615 (concurrency), for `/sim/state`.
    refused_606: u64,
    refused_615: u64,
    identity_calls: u64,
    rng: u64,
    next_id: i64,
    faults: VecDeque<Fault>,
    /// Fields an administrator deleted since the simulator started (`POST /sim/fields`), by
    /// object: gone from the describes, and 1006 when a record carries one.
    removed_fields: BTreeSet<(&'static str, String)>,
    leads: BTreeMap<i64, Map<String, Value>>,
    /// Lead ids by lower-cased email: Marketo matches emails without regard to case, and a
    /// scan of every lead per record would make large rehearsals quadratic.
    lead_emails: BTreeMap<String, Vec<i64>>,
    companies: BTreeMap<String, Map<String, Value>>,
    opportunities: BTreeMap<String, Map<String, Value>>,
    roles: BTreeMap<(String, i64, String), Map<String, Value>>,
    /// Opportunity and role keys by lower-cased marketoGUID, for queries by it (`recheck`):
    /// a scan of every record per query took about 0.1 s at 100k opportunities, under the
    /// lock. Entries are written when a record is created and may outlive it; a lookup checks
    /// that the record it finds still has that GUID.
    opportunity_guids: HashMap<String, String>,
    role_guids: HashMap<String, (String, i64, String)>,
    /// Company keys by Marketo id, for queries by it (`recheck`, the daily sample): a scan of
    /// every company took 81 ms a query at 100k companies (334 queries at 1M opportunities).
    /// Written and checked as the GUID indexes are.
    company_ids: HashMap<i64, String>,
    sales_persons: BTreeMap<String, Map<String, Value>>,
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

    /// The key of the company whose Marketo id is `id`, found through `company_ids` (whose
    /// entries may outlive their company: the key's company now may have another id).
    fn company_key(&self, id: i64) -> Option<&String> {
        let key = self.company_ids.get(&id)?;
        let stored = self.companies.get(key)?;
        (stored.get("id").and_then(Value::as_i64) == Some(id)).then_some(key)
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
            in_flight_peak: AtomicUsize::new(0),
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
            "/sim/fields" if req.method == "POST" => return self.change_fields(&req),
            _ => {}
        }
        if !req.path.starts_with("/rest/") {
            return Response::json(404, &json!({"error": "not found"}));
        }
        self.rest(req)
    }

    /// `GET /rest/v1/stats/usage.json`: today's calls, as Marketo counts them per API user.
    fn usage(&self, rng: u64) -> Response {
        let state = self.lock();
        envelope(
            rng,
            vec![json!({
                "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
                "total": state.daily_calls,
                "users": [{"userId": format!("{}@sim.invalid", self.config.client_id), "count": state.daily_calls}]
            })],
            None,
        )
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
            "refused_606": state.refused_606,
            "refused_615": state.refused_615,
            "in_flight_peak": self.in_flight_peak.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    fn route(&self, req: &Request, rng: u64, record_fault: Option<&str>) -> Response {
        if req.path == "/rest/v1/stats/usage.json" && req.method == "GET" {
            return self.usage(rng);
        }
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
}

/// The key of the record in `records` whose marketoGUID is `guid`, found through its GUID
/// `index` (lower-cased GUIDs) and matched exactly, as a delete by id matches it.
fn key_by_guid<K: Ord + Clone>(
    index: &HashMap<String, K>,
    records: &BTreeMap<K, Map<String, Value>>,
    guid: &Value,
) -> Option<K> {
    let key = index.get(&guid.as_str()?.to_ascii_lowercase())?;
    let stored = records.get(key)?;
    (stored.get("marketoGUID") == Some(guid)).then(|| key.clone())
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

#[cfg(test)]
mod tests;
