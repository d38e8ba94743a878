//! The simulator over real loopback HTTP: envelope, tokens, record results, limits, queries.

use std::time::Duration;

use serde_json::{Value, json};

use super::{MarketoSim, SimConfig};

struct Client {
    sim: MarketoSim,
    agent: ureq::Agent,
    token: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn start(config: SimConfig) -> Client {
    let sim = MarketoSim::start(0, config).unwrap();
    let agent = agent();
    let token = identity(&agent, &sim.url(), "oppsync-sim-secret")["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    Client { sim, agent, token }
}

fn identity(agent: &ureq::Agent, url: &str, secret: &str) -> Value {
    let mut response = agent
        .get(&format!("{url}/identity/oauth/token"))
        .query("grant_type", "client_credentials")
        .query("client_id", "oppsync-sim")
        .query("client_secret", secret)
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let mut body: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    body["http_status"] = json!(status);
    body
}

impl Client {
    fn post(&self, path: &str, body: Value) -> Value {
        let mut response = self
            .agent
            .post(&format!("{}{path}", self.sim.url()))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"http_status": status}))
    }

    fn get(&self, path_and_query: &str) -> Value {
        let mut response = self
            .agent
            .get(&format!("{}{path_and_query}", self.sim.url()))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The `field` of each record a query of `path` (under /rest/v1) by `field` finds among
    /// `values`, as text, sorted.
    fn found_by(&self, path: &str, field: &str, values: &[String]) -> Vec<String> {
        let answer = self.get(&format!(
            "/rest/v1/{path}?filterType={field}&filterValues={}&fields={field}",
            values.join(",")
        ));
        let mut found: Vec<String> = answer["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|r| match &r[field] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect();
        found.sort();
        found
    }
}

fn codes(body: &Value) -> Vec<String> {
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["reasons"][0]["code"]
                .as_str()
                .map_or_else(|| r["status"].as_str().unwrap().to_string(), str::to_string)
        })
        .collect()
}

fn opportunity(id: &str) -> Value {
    json!({"externalOpportunityId": id, "name": format!("Opp {id}"), "amount": 10.5, "closeDate": "2025-06-30", "isWon": false})
}

/// The opportunities `ids`, one lead, and its `roles` (opportunity, role): the sync answers for
/// the opportunities and for the roles, in the order given.
fn opportunities_with_roles(
    client: &Client,
    ids: &[&str],
    roles: &[(&str, &str)],
) -> (Value, Value) {
    let opportunities: Vec<Value> = ids.iter().map(|id| opportunity(id)).collect();
    let created = client.post(
        "/rest/v1/opportunities.json",
        json!({"input": opportunities}),
    );
    let lead = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "a@example.com"}]}),
    )["result"][0]["id"]
        .clone();
    let roles: Vec<Value> = roles
        .iter()
        .map(|(opportunity, role)| {
            json!({"externalOpportunityId": opportunity, "leadId": lead, "role": role})
        })
        .collect();
    let roles = client.post("/rest/v1/opportunities/roles.json", json!({"input": roles}));
    (created, roles)
}

#[test]
fn identity_reissues_the_same_token_and_refuses_bad_credentials() {
    let client = start(SimConfig::default());
    let again = identity(&client.agent, &client.sim.url(), "oppsync-sim-secret");
    assert_eq!(again["access_token"], json!(client.token));
    assert_eq!(again["token_type"], "bearer");
    assert!(again["expires_in"].as_u64().unwrap() <= 3600);
    let refused = identity(&client.agent, &client.sim.url(), "wrong");
    assert_eq!(refused["http_status"], 401);
    assert_eq!(refused["error"], "invalid_client");
}

#[test]
fn a_missing_token_gets_601_and_an_expired_one_602() {
    let client = start(SimConfig {
        token_ttl: Duration::from_millis(1200),
        ..SimConfig::default()
    });
    let mut response = client
        .agent
        .get(&format!(
            "{}/rest/v1/leads/describe.json?access_token={}",
            client.sim.url(),
            client.token
        ))
        .call()
        .unwrap();
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        body["errors"][0]["code"], "601",
        "the access_token parameter is not accepted"
    );
    assert_eq!(client.get("/rest/v1/leads/describe.json")["success"], true);
    std::thread::sleep(Duration::from_millis(1300));
    let expired = client.get("/rest/v1/leads/describe.json");
    assert_eq!(expired["success"], false);
    assert_eq!(expired["errors"][0]["code"], "602");
    assert!(expired.get("result").is_none());
}

#[test]
fn sync_answers_in_input_order_with_seq_and_record_level_skips() {
    let client = start(SimConfig::default());
    let mut unknown = opportunity("o3");
    unknown["colour"] = json!("red");
    let mut bad_date = opportunity("o4");
    bad_date["closeDate"] = json!("30/06/2025");
    let body = client.post(
        "/rest/v1/opportunities.json",
        json!({"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": [
            opportunity("o1"), opportunity("o1"), unknown, bad_date, {"externalOpportunityId": "o5", "name": null}
        ]}),
    );
    assert_eq!(body["success"], true);
    assert!(body.get("errors").is_none(), "no errors key on success");
    assert!(body["requestId"].as_str().unwrap().contains('#'));
    assert_eq!(codes(&body), ["created", "1036", "1006", "1003", "1003"]);
    let results = body["result"].as_array().unwrap();
    assert_eq!(
        results
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(results[0]["marketoGUID"].is_string());
    assert!(
        results[1].get("marketoGUID").is_none(),
        "skipped records carry no id"
    );
    let again = client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [opportunity("o1")]}),
    );
    assert_eq!(again["result"][0]["status"], "updated");
    assert_eq!(again["result"][0]["marketoGUID"], results[0]["marketoGUID"]);
}

#[test]
fn leads_match_by_email_whatever_its_case_and_carry_no_seq() {
    let client = start(SimConfig::default());
    let first = client.post("/rest/v1/leads.json", json!({"action": "createOrUpdate", "lookupField": "email", "input": [{"email": "Ana@Example.com", "firstName": "Ana"}]}));
    assert_eq!(first["result"][0]["status"], "created");
    assert!(first["result"][0].get("seq").is_none());
    let second = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "ana@example.com", "lastName": "Ruiz"}]}),
    );
    assert_eq!(second["result"][0]["status"], "updated");
    assert_eq!(second["result"][0]["id"], first["result"][0]["id"]);
    client.post(
        "/rest/v1/leads.json",
        json!({"action": "createDuplicate", "input": [{"email": "ana@example.com"}]}),
    );
    let ambiguous = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "ana@example.com"}]}),
    );
    assert_eq!(codes(&ambiguous), ["1007"]);
    // One email twice in a batch, in any case: the second is refused, as for the other objects.
    let twice = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "bo@example.com"}, {"email": "Bo@Example.com"}, {"email": "cy@example.com"}]}),
    );
    assert_eq!(codes(&twice), ["created", "1036", "created"]);
}

#[test]
fn a_role_needs_an_existing_opportunity_and_lead() {
    let client = start(SimConfig::default());
    let role = json!({"externalOpportunityId": "o1", "leadId": 1001, "role": "Customer", "isPrimary": true});
    assert_eq!(
        codes(&client.post(
            "/rest/v1/opportunities/roles.json",
            json!({"input": [role.clone()]})
        )),
        ["1013"]
    );
    client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [opportunity("o1")]}),
    );
    let lead = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "a@example.com"}]}),
    );
    let mut role = role;
    role["leadId"] = lead["result"][0]["id"].clone();
    assert_eq!(
        codes(&client.post(
            "/rest/v1/opportunities/roles.json",
            json!({"input": [role.clone()]})
        )),
        ["created"]
    );
    // Compound-key query, as Marketo documents it for roles.
    let url = format!(
        "{}/rest/v1/opportunities/roles.json?_method=GET",
        client.sim.url()
    );
    let mut response = client
        .agent
        .post(&url)
        .header("Authorization", &format!("Bearer {}", client.token))
        .header("Content-Type", "application/json")
        .send(json!({"filterType": "dedupeFields", "fields": ["marketoGUID", "role", "isPrimary"], "input": [role]}).to_string())
        .unwrap();
    let found: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(found["result"][0]["role"], "Customer");
    assert_eq!(found["result"][0]["isPrimary"], true);
    // Deleting the opportunity removes its roles.
    let deleted = client.post("/rest/v1/opportunities/delete.json", json!({"deleteBy": "dedupeFields", "input": [{"externalOpportunityId": "o1"}, {"externalOpportunityId": "nope"}]}));
    assert_eq!(codes(&deleted), ["deleted", "1013"]);
    assert_eq!(client.sim.state()["roles"].as_array().unwrap().len(), 0);
}

#[test]
fn limits_give_the_documented_codes() {
    let client = start(SimConfig {
        rate_limit_calls: 3,
        daily_quota: 5,
        ..SimConfig::default()
    });
    let too_many: Vec<Value> = (0..301).map(|i| opportunity(&format!("o{i}"))).collect();
    assert_eq!(
        client.post("/rest/v1/opportunities.json", json!({"input": too_many}))["success"],
        false
    );
    let huge = "x".repeat(1_100_000);
    assert_eq!(
        client.post(
            "/rest/v1/opportunities.json",
            json!({"input": [{"externalOpportunityId": "o", "name": huge}]})
        )["http_status"],
        413
    );
    let long_uri = format!(
        "/rest/v1/leads.json?filterType=email&filterValues={}",
        "a".repeat(9000)
    );
    let mut response = client
        .agent
        .get(&format!("{}{long_uri}", client.sim.url()))
        .header("Authorization", &format!("Bearer {}", client.token))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 414);
    let _ = response.body_mut().read_to_string();
    assert_eq!(client.get("/rest/v1/leads/describe.json")["success"], true);
    assert_eq!(client.get("/rest/v1/leads/describe.json")["success"], true);
    let limited = client.get("/rest/v1/leads/describe.json");
    assert_eq!(limited["errors"][0]["code"], "606");
    assert_eq!(
        limited["errors"][0]["message"],
        "Max rate limit '3' exceeded with in '20' secs"
    );
}

#[test]
fn the_daily_quota_gives_607() {
    let client = start(SimConfig {
        daily_quota: 1,
        ..SimConfig::default()
    });
    assert_eq!(client.get("/rest/v1/leads/describe.json")["success"], true);
    assert_eq!(
        client.get("/rest/v1/leads/describe.json")["errors"][0]["code"],
        "607"
    );
}

#[test]
fn more_calls_in_flight_than_allowed_get_615() {
    let client = start(SimConfig {
        concurrency: 1,
        latency: Duration::from_millis(300),
        ..SimConfig::default()
    });
    let url = client.sim.url();
    let token = client.token.clone();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let mut r = agent()
                    .get(&format!("{url}/rest/v1/leads/describe.json"))
                    .header("Authorization", &format!("Bearer {token}"))
                    .call()
                    .unwrap();
                let body: Value =
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                body["errors"][0]["code"]
                    .as_str()
                    .unwrap_or("ok")
                    .to_string()
            })
        })
        .collect();
    let outcomes: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outcomes.iter().any(|c| c == "ok"), "{outcomes:?}");
    assert!(outcomes.iter().any(|c| c == "615"), "{outcomes:?}");
}

#[test]
fn deletes_by_id_find_opportunities_and_roles_by_their_guid_and_only_the_current_one() {
    let client = start(SimConfig::default());
    let (created, roles) = opportunities_with_roles(
        &client,
        &["o1", "o2"],
        &[("o1", "Buyer"), ("o1", "Payer"), ("o2", "Buyer")],
    );
    let guid = |i: usize| created["result"][i]["marketoGUID"].clone();
    let role_guid = |i: usize| roles["result"][i]["marketoGUID"].clone();
    let statuses = |answer: &Value| -> Vec<String> {
        answer["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|r| r["status"].as_str().unwrap().to_string())
            .collect()
    };
    let deleted = client.post(
        "/rest/v1/opportunities/roles/delete.json",
        json!({"deleteBy": "idField", "input": [{"marketoGUID": role_guid(0)}, {"marketoGUID": "nope"}]}),
    );
    assert_eq!(statuses(&deleted), ["deleted", "skipped"], "{deleted}");
    assert_eq!(deleted["result"][0]["marketoGUID"], role_guid(0));
    // o2 goes with its role; o1 keeps its other one.
    let deleted = client.post(
        "/rest/v1/opportunities/delete.json",
        json!({"deleteBy": "idField", "input": [{"marketoGUID": guid(1)}]}),
    );
    assert_eq!(statuses(&deleted), ["deleted"], "{deleted}");
    let state = client.get("/sim/state");
    let left: Vec<&Value> = state["roles"].as_array().unwrap().iter().collect();
    assert_eq!(left.len(), 1, "{state}");
    assert_eq!(left[0]["marketoGUID"], role_guid(1));
    // Created anew, o2 has another GUID: the old one deletes nothing.
    client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [opportunity("o2")]}),
    );
    let deleted = client.post(
        "/rest/v1/opportunities/delete.json",
        json!({"deleteBy": "idField", "input": [{"marketoGUID": guid(1)}]}),
    );
    assert_eq!(statuses(&deleted), ["skipped"], "{deleted}");
    assert_eq!(
        client.get("/sim/state")["opportunities"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn deletes_by_id_of_companies_and_leads_remove_what_they_name_and_nothing_else() {
    let client = start(SimConfig::default());
    let companies = client.post(
        "/rest/v1/companies.json",
        json!({"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": [
            {"externalCompanyId": "c1", "company": "One"},
            {"externalCompanyId": "c2", "company": "Two"}
        ]}),
    );
    let company = |i: usize| companies["result"][i]["id"].clone();
    let deleted = client.post(
        "/rest/v1/companies/delete.json",
        json!({"deleteBy": "idField", "input": [{"id": company(1)}, {"id": company(1)}, {"id": 999_999}, {}]}),
    );
    assert_eq!(
        codes(&deleted),
        ["deleted", "1013", "1013", "1013"],
        "{deleted}"
    );
    let left = client.get("/sim/state")["companies"].clone();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["id"], company(0));
    // A deleted lead's roles go with it; the other lead's stay.
    client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [opportunity("o1"), opportunity("o2")]}),
    );
    let leads = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "a@example.com"}, {"email": "b@example.com"}]}),
    );
    let (a, b) = (
        leads["result"][0]["id"].clone(),
        leads["result"][1]["id"].clone(),
    );
    let role = |o: &str, lead: &Value, role: &str| json!({"externalOpportunityId": o, "leadId": lead, "role": role});
    let roles = client.post(
        "/rest/v1/opportunities/roles.json",
        json!({"input": [role("o1", &a, "Buyer"), role("o1", &b, "Buyer"), role("o2", &b, "Payer"), role("o2", &a, "Payer")]}),
    );
    assert_eq!(codes(&roles), ["created"; 4], "{roles}");
    let deleted = client.post("/rest/v1/leads/delete.json", json!({"input": [{"id": a}]}));
    assert_eq!(codes(&deleted), ["deleted"], "{deleted}");
    let state = client.get("/sim/state");
    let holders: Vec<&Value> = state["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["leadId"])
        .collect();
    assert_eq!(holders, [&b, &b], "{state}");
    assert_eq!(state["leads"].as_array().unwrap().len(), 1, "{state}");
}

#[test]
fn companies_are_found_by_id_and_a_deleted_one_is_not_even_when_created_anew() {
    let client = start(SimConfig::default());
    let sync = |ids: &[&str]| -> Vec<i64> {
        let input: Vec<Value> = ids
            .iter()
            .map(|id| json!({"externalCompanyId": id, "company": format!("Company {id}")}))
            .collect();
        let answer = client.post(
            "/rest/v1/companies.json",
            json!({"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": input}),
        );
        let ids = answer["result"].as_array().unwrap().iter();
        ids.map(|r| r["id"].as_i64().unwrap()).collect()
    };
    let found = |ids: &[String]| -> Vec<i64> {
        let found = client.found_by("companies.json", "id", ids);
        let mut found: Vec<i64> = found.iter().map(|id| id.parse().unwrap()).collect();
        found.sort_unstable();
        found
    };
    let ids = sync(&["c1", "c2", "c3"]);
    let text = |id: i64| id.to_string();
    // Each once however often asked; nothing for an unknown id or one that is not a number.
    assert_eq!(
        found(&[
            text(ids[0]),
            text(ids[2]),
            text(ids[2]),
            "999999".into(),
            "x".into()
        ]),
        [ids[0], ids[2]]
    );
    // Deleted, then created anew with the same externalCompanyId: a new id, the old one gone.
    client.post(
        "/rest/v1/companies/delete.json",
        json!({"deleteBy": "dedupeFields", "input": [{"externalCompanyId": "c2"}]}),
    );
    let again = sync(&["c2"]);
    assert_ne!(again[0], ids[1]);
    assert_eq!(
        found(&[text(ids[0]), text(ids[1]), text(again[0])]),
        [ids[0], again[0]]
    );
    // An update keeps the id, and the company is still found by it.
    assert_eq!(sync(&["c1"]), [ids[0]]);
    assert_eq!(found(&[text(ids[0])]), [ids[0]]);
}

#[test]
fn opportunities_and_roles_are_found_by_marketo_guid_and_deleted_ones_are_not() {
    let client = start(SimConfig::default());
    let (created, roles) = opportunities_with_roles(
        &client,
        &["o1", "o2", "o3"],
        &[("o1", "Buyer"), ("o2", "Buyer"), ("o2", "Payer")],
    );
    let guid = |i: usize| {
        created["result"][i]["marketoGUID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let role_guid = |i: usize| {
        roles["result"][i]["marketoGUID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let found = |path: &str, values: &[String]| client.found_by(path, "marketoGUID", values);
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // Whatever the case, each once however often asked, and nothing for an unknown GUID.
    assert_eq!(
        found(
            "opportunities.json",
            &[guid(0).to_uppercase(), guid(2), guid(2), "nope".into()]
        ),
        sorted(vec![guid(0), guid(2)])
    );
    assert_eq!(
        found(
            "opportunities/roles.json",
            &[role_guid(0), role_guid(1), role_guid(2)]
        ),
        sorted(vec![role_guid(0), role_guid(1), role_guid(2)])
    );
    // Deleting o2 takes its two roles and no other; created anew, it has another GUID.
    client.post(
        "/rest/v1/opportunities/delete.json",
        json!({"deleteBy": "dedupeFields", "input": [{"externalOpportunityId": "o2"}]}),
    );
    assert_eq!(
        found(
            "opportunities/roles.json",
            &[role_guid(0), role_guid(1), role_guid(2)]
        ),
        [role_guid(0)]
    );
    let again = client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [opportunity("o2")]}),
    );
    let new_guid = again["result"][0]["marketoGUID"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_guid, guid(1));
    assert_eq!(
        found("opportunities.json", &[guid(1)]),
        Vec::<String>::new()
    );
    assert_eq!(
        found("opportunities.json", &[guid(1), new_guid.clone()]),
        [new_guid]
    );
}

#[test]
fn queries_page_with_next_page_token_and_accept_post_method_get() {
    let client = start(SimConfig::default());
    let leads: Vec<Value> = (0..3)
        .map(|i| json!({"email": format!("p{i}@example.com")}))
        .collect();
    client.post("/rest/v1/leads.json", json!({"input": leads}));
    let first = client.get("/rest/v1/leads.json?filterType=email&filterValues=p0@example.com,p1@example.com,p2@example.com&batchSize=2");
    assert_eq!(first["result"].as_array().unwrap().len(), 2);
    assert_eq!(first["moreResult"], true);
    let token = first["nextPageToken"].as_str().unwrap();
    let rest = client.get(&format!("/rest/v1/leads.json?filterType=email&filterValues=p0@example.com,p1@example.com,p2@example.com&batchSize=2&nextPageToken={token}"));
    assert_eq!(rest["result"].as_array().unwrap().len(), 1);
    assert!(rest.get("moreResult").is_none());
    // Numbers match their text; strings match whatever their case; a value matching nothing
    // finds nothing.
    let ids: Vec<String> = first["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lead| lead["id"].to_string())
        .collect();
    let by_id = client.get(&format!(
        "/rest/v1/leads.json?filterType=id&filterValues={},99999999&fields=email",
        ids.join(",")
    ));
    assert_eq!(by_id["result"].as_array().unwrap().len(), 2, "{by_id}");
    let by_email = client
        .get("/rest/v1/leads.json?filterType=email&filterValues=P2@Example.COM,nobody@example.com");
    assert_eq!(by_email["result"][0]["email"], "p2@example.com");
    assert_eq!(by_email["result"].as_array().unwrap().len(), 1);
    let mut response = client
        .agent
        .post(&format!(
            "{}/rest/v1/leads.json?_method=GET",
            client.sim.url()
        ))
        .header("Authorization", &format!("Bearer {}", client.token))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("filterType=email&filterValues=P1%40example.com&fields=email,id")
        .unwrap();
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["result"][0]["email"], "p1@example.com");
    assert_eq!(
        client.get("/rest/v1/opportunities.json?filterType=colour&filterValues=red")["errors"][0]["code"],
        "1003"
    );
}

#[test]
fn queued_faults_fail_the_next_calls_then_clear() {
    let client = start(SimConfig::default());
    let queue = |fault: Value| {
        client
            .agent
            .post(&format!("{}/sim/faults", client.sim.url()))
            .send(fault.to_string())
            .unwrap();
    };
    queue(
        json!([{"http": 502}, {"code": "604", "count": 2}, {"record_code": "1003", "path": "leads"}]),
    );
    let mut response = client
        .agent
        .get(&format!("{}/rest/v1/leads/describe.json", client.sim.url()))
        .header("Authorization", &format!("Bearer {}", client.token))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 502);
    let _ = response.body_mut().read_to_string();
    assert_eq!(
        client.get("/rest/v1/leads/describe.json")["errors"][0]["code"],
        "604"
    );
    assert_eq!(
        client.get("/rest/v1/leads/describe.json")["errors"][0]["code"],
        "604"
    );
    let skipped = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "a@example.com"}, {"email": "b@example.com"}]}),
    );
    assert_eq!(codes(&skipped), ["1003", "created"]);
    assert_eq!(client.get("/rest/v1/leads/describe.json")["success"], true);
}

#[test]
fn sales_persons_are_synced_queried_described_and_deleted_and_unknown_ones_get_718() {
    let client = start(SimConfig::default());
    let describe = client.get("/rest/v1/salespersons/describe.json");
    assert_eq!(
        describe["result"][0]["dedupeFields"],
        json!(["externalSalesPersonId"])
    );
    let person =
        json!({"externalSalesPersonId": "u1", "email": "dana@example.com", "firstName": "Dana"});
    let synced = client.post(
        "/rest/v1/salespersons.json",
        json!({"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": [person]}),
    );
    assert_eq!(synced["result"][0]["status"], "created");
    assert_eq!(synced["result"][0]["seq"], 0);
    assert!(synced["result"][0]["id"].is_i64());
    for filter in [
        "filterType=externalSalesPersonId&filterValues=u1",
        "filterType=email&filterValues=dana@example.com",
    ] {
        let found = client.get(&format!("/rest/v1/salespersons.json?{filter}"));
        assert_eq!(found["result"].as_array().unwrap().len(), 1, "{filter}");
    }
    let opportunities = client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [
            {"externalOpportunityId": "o1", "name": "Known", "externalSalesPersonId": "u1"},
            {"externalOpportunityId": "o2", "name": "Stranger", "externalSalesPersonId": "u9"}
        ]}),
    );
    assert_eq!(codes(&opportunities), ["created", "718"]);
    let leads = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "a@example.com", "externalSalesPersonId": "u9", "externalPersonId": "c1"}]}),
    );
    assert_eq!(codes(&leads), ["718"]);
    let deleted = client.post(
        "/rest/v1/salespersons/delete.json",
        json!({"deleteBy": "dedupeFields", "input": [{"externalSalesPersonId": "u1"}]}),
    );
    assert_eq!(deleted["result"][0]["status"], "deleted");
}

#[test]
fn an_instance_with_native_crm_sync_answers_1018_to_writes_and_roles() {
    let client = start(SimConfig {
        native_crm_sync: true,
        ..SimConfig::default()
    });
    let write = client.post(
        "/rest/v1/opportunities.json",
        json!({"input": [opportunity("o1")]}),
    );
    assert_eq!(write["errors"][0]["code"], "1018");
    let read = client.get("/rest/v1/opportunities/describe.json");
    assert_eq!(read["success"], true, "reads of opportunities still work");
    let roles = client.get("/rest/v1/opportunities/roles/describe.json");
    assert_eq!(roles["errors"][0]["code"], "1018");
    let leads = client.post(
        "/rest/v1/leads.json",
        json!({"input": [{"email": "a@example.com"}]}),
    );
    assert_eq!(leads["success"], true, "leads are not switched off");
}

#[test]
fn a_field_deleted_by_an_administrator_leaves_the_describe_and_gets_1006_until_restored() {
    let client = start(SimConfig::default());
    let fields = |change: Value| -> (u16, Value) {
        let mut response = client
            .agent
            .post(&format!("{}/sim/fields", client.sim.url()))
            .send(change.to_string())
            .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap())
    };
    let described = |path: &str| -> Vec<String> {
        client.get(path)["result"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    let lead_described = || -> Vec<String> {
        client.get("/rest/v1/leads/describe.json")["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rest"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let mut with_step = opportunity("o1");
    with_step["nextStep"] = json!("call back");
    let sync = |record: &Value| {
        client.post(
            "/rest/v1/opportunities.json",
            json!({"action": "createOrUpdate", "dedupeBy": "dedupeFields", "input": [record]}),
        )
    };
    let opportunity_fields = "/rest/v1/opportunities/describe.json";
    assert!(described(opportunity_fields).contains(&"nextStep".to_string()));
    assert_eq!(codes(&sync(&with_step)), ["created"]);

    let (status, body) = fields(json!({"object": "opportunity", "remove": ["nextStep"]}));
    assert_eq!(
        (status, &body),
        (200, &json!({"removed": ["opportunity.nextStep"]}))
    );
    assert!(!described(opportunity_fields).contains(&"nextStep".to_string()));
    assert_eq!(codes(&sync(&with_step)), ["1006"]);
    assert_eq!(codes(&sync(&opportunity("o1"))), ["updated"]);
    // Other objects keep their fields.
    assert!(lead_described().contains(&"title".to_string()));

    let (status, _) = fields(json!({"object": "lead", "remove": ["title"]}));
    assert_eq!(status, 200);
    assert!(!lead_described().contains(&"title".to_string()));

    let (status, body) = fields(json!({"object": "opportunity", "restore": ["nextStep"]}));
    assert_eq!((status, &body), (200, &json!({"removed": ["lead.title"]})));
    assert_eq!(codes(&sync(&with_step)), ["updated"]);

    for (change, error) in [
        (
            json!({"object": "opportunity", "remove": ["externalOpportunityId"]}),
            "cannot be deleted",
        ),
        (
            json!({"object": "opportunity", "remove": ["colour"]}),
            "has no field colour",
        ),
        (
            json!({"object": "widget", "remove": ["name"]}),
            "unknown object widget",
        ),
        (
            json!({"object": "lead", "drop": ["title"]}),
            "unknown field",
        ),
    ] {
        let (status, body) = fields(change);
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains(error), "{body}");
    }
}
