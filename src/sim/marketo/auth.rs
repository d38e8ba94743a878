//! Authentication and limits: the identity endpoint, then, for every REST call, the bearer
//! token (601, 602), queued and random faults, the daily quota (607), the sliding rate window
//! (606) and calls in flight (615), before the call reaches its route. Also `/sim/faults`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Fault, Sim, failure};
use crate::sim::http::{self, Request, Response};

impl Sim {
    pub(super) fn identity(&self, req: &Request) -> Response {
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

    pub(super) fn queue_faults(&self, req: &Request) -> Response {
        let faults: Vec<Fault> = http::json_items(&req.body);
        let queued = faults.len();
        self.lock().faults.extend(faults);
        Response::json(200, &json!({"queued": queued}))
    }

    /// Every REST call: authentication, injected faults, limits, then the route.
    pub(super) fn rest(&self, req: Request) -> Response {
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
                state.refused_606 += 1;
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
        self.in_flight_peak.fetch_max(in_flight, Ordering::SeqCst);
        let response = if in_flight > self.config.concurrency {
            self.lock().refused_615 += 1;
            failure(
                rng,
                "615",
                &format!(
                    "Concurrent access limit '{}' reached",
                    self.config.concurrency
                ),
            )
        } else {
            let jitter = self.config.latency_jitter.as_millis() as u64;
            let extra = if jitter == 0 {
                0
            } else {
                self.lock().next_random() % (jitter + 1)
            };
            let latency = self.config.latency + Duration::from_millis(extra);
            if !latency.is_zero() {
                std::thread::sleep(latency);
            }
            self.route(&req, rng, record_fault.as_deref())
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        response
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
