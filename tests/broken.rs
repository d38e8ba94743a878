//! Small broken servers for the security tests: a loopback HTTP/1.1 server whose every answer
//! comes from a closure, so a test can script a Marketo that echoes secrets or loses ids, or a
//! Dataverse that links to another host or to itself. One request per connection; every request
//! is recorded; the server stops answering after `MAX_REQUESTS` so no test can loop unbounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// No test needs more; past this the server answers 500 to everything.
const MAX_REQUESTS: usize = 500;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What the server answers.
pub enum Reply {
    /// A status and a JSON (or any) body.
    Body(u16, String),
    /// A 200 whose body arrives one byte every `every`, for `bytes` bytes.
    Trickle { every: Duration, bytes: usize },
    /// The connection is closed without an answer (a proxy resetting a request it dislikes).
    HangUp,
}

impl Reply {
    pub fn json(value: Value) -> Reply {
        Reply::Body(200, value.to_string())
    }
}

/// Answers a request; the second argument is the server's own base URL, for links to itself.
type Handler = dyn Fn(&Request, &str) -> Reply + Send + Sync;

/// A running broken server; stops when dropped.
pub struct BrokenServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl BrokenServer {
    /// Serves on `host` (127.0.0.1, or 127.0.0.2 for "another host"), a free port.
    pub fn start(
        host: &str,
        handler: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static,
    ) -> BrokenServer {
        let listener = TcpListener::bind((host, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let requests = requests.clone();
            let stop = stop.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = requests.clone();
                    let handler = handler.clone();
                    let url = url.clone();
                    std::thread::spawn(move || serve(stream, &requests, &*handler, &url));
                }
            });
        }
        BrokenServer {
            url,
            requests,
            stop,
            addr,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for BrokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Handler, url: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(64 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let reply = {
        let mut seen = requests.lock().unwrap();
        seen.push(request.clone());
        if seen.len() > MAX_REQUESTS {
            Reply::Body(500, "too many requests for a test".into())
        } else {
            drop(seen);
            handler(&request, url)
        }
    };
    let mut stream = stream;
    match reply {
        Reply::Body(status, body) => {
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Reply::HangUp => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Reply::Trickle { every, bytes } => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
            );
            for _ in 0..bytes {
                if stream.write_all(b" ").is_err() {
                    break;
                }
                let _ = stream.flush();
                std::thread::sleep(every);
            }
        }
    }
}

/// What a scripted Marketo does differently from a well-behaved one.
#[derive(Clone, Copy, Default)]
pub struct MarketoFaults {
    /// Results of seq-carrying objects come back in reverse order (with their seq).
    pub reversed: bool,
    /// Created leads come back without an id.
    pub leads_without_id: bool,
    /// Lead answers carry one result fewer than records sent.
    pub short_lead_answer: bool,
    /// A request whose body contains this text is answered HTTP 413.
    pub refuse_marker: Option<&'static str>,
    /// A request whose body contains this text gets no answer: the connection is closed.
    pub hang_up_marker: Option<&'static str>,
}

/// A minimal well-behaved Marketo: identity, and createOrUpdate of every object, answering each
/// record `created` with an id derived from its content, so that tests can tell which record got
/// which id: a company's id is the last 8 hex digits of its externalCompanyId, an opportunity's
/// marketoGUID is `opp-<externalOpportunityId>`, a role's `role-<opportunity>-<leadId>-<role>`;
/// leads are numbered in order from 1001. `faults` breaks it on purpose.
pub fn marketo(faults: MarketoFaults) -> impl Fn(&Request, &str) -> Reply + Send + Sync + 'static {
    let next_lead = Arc::new(Mutex::new(1000u64));
    move |request: &Request, _url: &str| {
        if request.path() == "/identity/oauth/token" {
            return Reply::json(json!({
                "access_token": "broken-marketo-token-7f3a9c",
                "token_type": "bearer",
                "expires_in": 3599,
                "scope": "x"
            }));
        }
        if request.path().ends_with("/describe.json") {
            return Reply::json(describe(request.path()));
        }
        if let Some(marker) = faults.refuse_marker
            && request.body.contains(marker)
        {
            return Reply::Body(
                413,
                "<html><body>Request Entity Too Large</body></html>".into(),
            );
        }
        if let Some(marker) = faults.hang_up_marker
            && request.body.contains(marker)
        {
            return Reply::HangUp;
        }
        let input = request.json()["input"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let path = request.path();
        let is_lead = path.starts_with("/rest/v1/leads");
        let mut results: Vec<Value> = input
            .iter()
            .enumerate()
            .map(|(seq, record)| {
                if is_lead {
                    let mut id = next_lead.lock().unwrap();
                    *id += 1;
                    if faults.leads_without_id {
                        json!({"status": "created"})
                    } else {
                        json!({"id": *id, "status": "created"})
                    }
                } else if path.contains("companies") {
                    json!({"seq": seq, "id": company_id(record["externalCompanyId"].as_str().unwrap_or("")), "status": "created"})
                } else if path.contains("roles") {
                    let guid = format!(
                        "role-{}-{}-{}",
                        record["externalOpportunityId"].as_str().unwrap_or(""),
                        record["leadId"],
                        record["role"].as_str().unwrap_or("")
                    );
                    json!({"seq": seq, "marketoGUID": guid, "status": "created"})
                } else {
                    let guid = format!("opp-{}", record["externalOpportunityId"].as_str().unwrap_or(""));
                    json!({"seq": seq, "marketoGUID": guid, "status": "created"})
                }
            })
            .collect();
        if is_lead && faults.short_lead_answer {
            results.pop();
        }
        if faults.reversed && !is_lead {
            results.reverse();
        }
        Reply::json(json!({"requestId": "1#1", "success": true, "result": results}))
    }
}

/// Every field oppsync sends, on every object: the scripted Marketo checks nothing.
const FIELDS: &[&str] = &[
    "externalSalesPersonId",
    "email",
    "firstName",
    "lastName",
    "title",
    "phone",
    "mobilePhone",
    "externalCompanyId",
    "company",
    "website",
    "numberOfEmployees",
    "annualRevenue",
    "industry",
    "mainPhone",
    "billingStreet",
    "billingCity",
    "billingState",
    "billingPostalCode",
    "billingCountry",
    "externalPersonId",
    "externalOpportunityId",
    "name",
    "description",
    "amount",
    "closeDate",
    "stage",
    "isClosed",
    "isWon",
    "probability",
    "externalCreatedDate",
    "leadId",
    "role",
    "isPrimary",
];

/// A describe answer in the shape of the object's real one.
fn describe(path: &str) -> Value {
    if path.starts_with("/rest/v1/leads") {
        let fields: Vec<Value> = FIELDS
            .iter()
            .map(|f| json!({"displayName": f, "dataType": "string", "rest": {"name": f, "readOnly": false}}))
            .collect();
        return json!({"success": true, "result": fields});
    }
    let fields: Vec<Value> = FIELDS
        .iter()
        .map(|f| json!({"name": f, "dataType": "string", "updateable": true}))
        .collect();
    json!({"success": true, "result": [{"name": "object", "fields": fields}]})
}

/// The id the scripted Marketo gives a company: the last 8 hex digits of its key.
pub fn company_id(key: &str) -> u64 {
    let tail = &key[key.len().saturating_sub(8)..];
    u64::from_str_radix(tail, 16).unwrap_or(0) + 1
}
