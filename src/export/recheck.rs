//! Asks Marketo whether it still holds what it acknowledged (`oppsync recheck`): each
//! acknowledged lead and company by its id, each opportunity by its marketoGUID (and with
//! `--roles`, each role by its marketoGUID), with one query call per 300 leads or companies
//! and per 150 opportunities or roles (so that their GUIDs keep the query under Marketo's 8 KB
//! URI limit), `[marketo] max_in_flight` of them at a time, as push sends. Those Marketo no
//! longer has (deleted there by hand, or a lead merged into another) are set back, their
//! acknowledged payload emptied, so that the next push sends them again; Marketo gives them a
//! new id, and push sends their roles after them (`mkto_moved`); a company's leads and
//! opportunities are sent again after it (`SET_BACK_NAMING_MISSING_COMPANIES`). Roles are
//! asked about only when asked for: Marketo deletes a lead's or an opportunity's roles with
//! it, which the lookups before find, and at 1M opportunities the roles alone would take
//! about 17,000 calls.
//!
//! A record is only set back on an answer that lists the records found: an answer without a
//! result list fails the run, and sets back nothing of its object (an object before it is
//! set back already). When Marketo lacks more than half of an object's records (and more than
//! ten), that is not what a few deletions do (most likely
//! `marketo.base_url` names another instance than the one they were sent to), so nothing of
//! that object is set back and the run fails saying so, rather than have the next push send
//! the whole org again.

use std::collections::HashSet;
use std::sync::{Mutex, mpsc};

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::client::{CallLog, MarketoClient};
use super::push::insert_calls;
use crate::object::Object;

/// The objects rechecked, the field each is looked up by, and how many go in one query.
const LOOKUPS: [(Object, &str, usize); 2] = [
    (Object::Lead, "id", 300),
    (Object::Opportunity, "marketoGUID", 150),
];

/// The roles' lookup, after the others when `recheck --roles` asks for it, and in every sample.
const ROLE_LOOKUP: (Object, &str, usize) = (Object::OpportunityRole, "marketoGUID", 150);

/// The companies' lookup, after the leads' and opportunities' in every recheck, and in every
/// sample: by Marketo's id, one of Companies' searchable fields. The leads and opportunities
/// naming a company it finds missing were looked up already, and are set back with it.
const COMPANY_LOOKUP: (Object, &str, usize) = (Object::Company, "id", 300);

/// Sets back, with the companies in `temp.recheck_missing`, the leads and opportunities whose
/// acknowledged payload names one of them. What Marketo does to the records linked to a
/// company deleted there is UNCONFIRMED (the reference is silent: a lead "can only leave a
/// company by being moved to another one"), so they are sent again once the company is,
/// which links them to it again whatever Marketo did; it costs their calls, once.
const SET_BACK_NAMING_MISSING_COMPANIES: &str = "UPDATE mkto_ack SET payload = ''
    WHERE object IN ('lead', 'opportunity') AND payload <> ''
      AND json_extract(payload, '$.externalCompanyId') IN (SELECT key FROM temp.recheck_missing)";

/// Records set back whatever share of their object they are: resending them costs a call.
const FEW: usize = 10;

/// What a recheck found, per object; the `recheck` run's counts.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Rechecked {
    pub checked: std::collections::BTreeMap<&'static str, usize>,
    pub missing: std::collections::BTreeMap<&'static str, usize>,
    pub calls: usize,
}

/// Looks every acknowledged company, lead and opportunity (and with `roles`, role) up in
/// Marketo, and sets back those it lacks (and for a company, what names it).
pub(crate) fn recheck(
    conn: &mut Connection,
    run_id: i64,
    client: &MarketoClient,
    max_in_flight: usize,
    roles: bool,
    say: &dyn Fn(String),
) -> Result<Rechecked> {
    let mut rechecked = Rechecked::default();
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS recheck_missing (key TEXT PRIMARY KEY, marketo_id TEXT NOT NULL);
         DELETE FROM temp.recheck_missing;",
    )?;
    let lookups = LOOKUPS
        .into_iter()
        .chain([COMPANY_LOOKUP])
        .chain(roles.then_some(ROLE_LOOKUP));
    for (object, field, per_call) in lookups {
        let checked = note_missing(
            conn,
            run_id,
            client,
            (object, field, per_call),
            max_in_flight,
            &mut rechecked.calls,
        )?;
        let missing: usize =
            conn.query_row("SELECT count(*) FROM temp.recheck_missing", [], |r| {
                r.get::<_, i64>(0)
            })? as usize;
        rechecked.checked.insert(object.name(), checked);
        rechecked.missing.insert(object.name(), missing);
        if missing > FEW && missing * 2 > checked {
            bail!(
                "Marketo lacks {missing} of the {checked} {} acknowledged here: not what a few deletions there do. Is marketo.base_url the instance they were sent to? None of them was set back",
                object.plural()
            );
        }
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE mkto_ack SET payload = '' WHERE object = ?1
                 AND (key, marketo_id) IN (SELECT key, marketo_id FROM temp.recheck_missing)",
            [object.name()],
        )?;
        let naming = if object == Object::Company && missing > 0 {
            tx.execute(SET_BACK_NAMING_MISSING_COMPANIES, [])?
        } else {
            0
        };
        tx.execute("DELETE FROM temp.recheck_missing", [])?;
        tx.commit()?;
        say(match (missing, naming) {
            (0, _) => format!("{}: {checked} checked, all in Marketo", object.plural()),
            (_, 0) => format!(
                "{}: {checked} checked, {missing} no longer in Marketo (the next push sends them again)",
                object.plural()
            ),
            _ => format!(
                "{}: {checked} checked, {missing} no longer in Marketo (the next push sends them again, \
                 then the {naming} leads and opportunities that name them)",
                object.plural()
            ),
        });
    }
    Ok(rechecked)
}

/// Asks Marketo about every acknowledged record of `object` by `field`, `per_call` to a query,
/// with `max_in_flight` queries in flight (each on a thread of its own, paced by the client's
/// limiter; the next batch is read while they wait), and notes those it lacks in
/// `temp.recheck_missing`. Each query's calls are logged and its answer judged in key order.
/// Returns how many were asked about; an error as soon as an answer allows no conclusion,
/// once the queries in flight are answered and logged.
fn note_missing(
    conn: &mut Connection,
    run_id: i64,
    client: &MarketoClient,
    (object, field, per_call): (Object, &str, usize),
    max_in_flight: usize,
    calls_made: &mut usize,
) -> Result<usize> {
    type Answer = (Result<HashSet<String>>, Vec<CallLog>);
    let (jobs, queue) = mpsc::channel::<(usize, Vec<(String, String)>)>();
    let queue = &Mutex::new(queue);
    // The workers stop when `jobs`, moved in, is dropped: at the end, or on an early return.
    std::thread::scope(move |scope| {
        let (answered, answers) = mpsc::channel::<(usize, Vec<(String, String)>, Answer)>();
        for _ in 0..max_in_flight.max(1) {
            let answered = answered.clone();
            scope.spawn(move || {
                loop {
                    let job = queue.lock().map_or(Err(mpsc::RecvError), |q| q.recv());
                    let Ok((at, batch)) = job else { break };
                    let ids: Vec<&str> = batch.iter().map(|(_, id)| id.as_str()).collect();
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        ask(client, object, field, &ids)
                    }))
                    .unwrap_or_else(|_| {
                        (
                            Err(anyhow::anyhow!(
                                "the query of {} stopped unanswered",
                                object.plural()
                            )),
                            Vec::new(),
                        )
                    });
                    if answered.send((at, batch, answer)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(answered);
        let (mut sent, mut judged, mut checked) = (0, 0, 0);
        let mut after = String::new();
        let (mut more, mut failed) = (true, None);
        // Answers that came before one sent earlier, waiting for their turn.
        let mut early = std::collections::BTreeMap::new();
        loop {
            if failed.is_none() {
                // On a stop no query more: those in flight are answered and logged, then the
                // run ends.
                failed = crate::stop::check().err();
            }
            while more && failed.is_none() && sent - judged < max_in_flight.max(1) {
                let batch = acknowledged(conn, object, &after, per_call)?;
                let Some((last, _)) = batch.last() else {
                    more = false;
                    break;
                };
                after = last.clone();
                // `queue` outlives the workers: this send cannot fail.
                let _ = jobs.send((sent, batch));
                sent += 1;
            }
            if judged == sent {
                break;
            }
            let Ok((at, batch, answer)) = answers.recv() else {
                bail!("the queries of {} stopped unanswered", object.plural());
            };
            early.insert(at, (batch, answer));
            while let Some((batch, (found, calls))) = early.remove(&judged) {
                judged += 1;
                *calls_made += CallLog::rest_count(&calls);
                let tx = conn.transaction()?;
                insert_calls(&tx, run_id, &calls)?;
                match found {
                    Ok(found) => {
                        for (key, id) in batch.iter().filter(|(_, id)| !found.contains(id)) {
                            tx.prepare_cached(
                                "INSERT INTO temp.recheck_missing (key, marketo_id) VALUES (?1, ?2)",
                            )?
                            .execute(params![key, id])?;
                        }
                        checked += batch.len();
                    }
                    Err(err) => {
                        failed.get_or_insert(err);
                    }
                }
                tx.commit()?;
            }
        }
        drop(jobs);
        match failed {
            Some(err) => Err(err),
            None => Ok(checked),
        }
    })
}

/// Which of `ids` (values of `field`) Marketo holds, with the calls that asked; an error when
/// the call failed or its answer allows no conclusion. Each call is logged with the count of
/// values rather than the values (up to 5 KB a call).
fn ask(
    client: &MarketoClient,
    object: Object,
    field: &str,
    ids: &[&str],
) -> (Result<HashSet<String>>, Vec<CallLog>) {
    let path = format!(
        "{}?filterType={field}&filterValues={}&fields={field}",
        object.sync_path(),
        ids.join(",")
    );
    let mut exchange = client.get(&path);
    let logged = format!(
        "/rest{}?filterType={field}&filterValues=({} values)&fields={field}",
        object.sync_path(),
        ids.len()
    );
    for call in exchange.calls.iter_mut().filter(|c| c.is_rest()) {
        call.path = logged.clone();
        call.records = ids.len();
    }
    let found = exchange.result.and_then(|answer| {
        found(&answer, field).map_err(|why| {
            anyhow::anyhow!(
                "Marketo's answer to the query of {} {} {why}; nothing of them was set back",
                ids.len(),
                object.plural()
            )
        })
    });
    (found, exchange.calls)
}

/// Of a sample of one object's acknowledged records: how many were asked about, and how many
/// Marketo lacks.
pub(crate) struct Sampled {
    pub object: Object,
    pub asked: usize,
    pub missing: usize,
}

/// For `check`, and for `sync` every `[marketo] sample_every_hours`: a sample of the
/// acknowledged leads, opportunities, companies and roles (as many as one query asks about,
/// chosen at random) looked up in Marketo; objects with none acknowledged are left out. The
/// calls made are added to `calls`, for a command that records a run to log.
pub(crate) fn sample(
    conn: &Connection,
    client: &MarketoClient,
    calls: &mut Vec<CallLog>,
) -> Result<Vec<Sampled>> {
    let mut sampled = Vec::new();
    for (object, field, per_call) in LOOKUPS.into_iter().chain([COMPANY_LOOKUP, ROLE_LOOKUP]) {
        let batch = random_acknowledged(conn, object, per_call)?;
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<&str> = batch.iter().map(String::as_str).collect();
        let (found, made) = ask(client, object, field, &ids);
        calls.extend(made);
        let found = found?;
        sampled.push(Sampled {
            object,
            asked: ids.len(),
            missing: ids.iter().filter(|id| !found.contains(**id)).count(),
        });
    }
    Ok(sampled)
}

/// Whether `sync` is to sample what Marketo holds: `every_hours` (not 0) have passed since the
/// last sample stored, or none is, or the last is stamped in the future (the clock was set
/// back).
pub(crate) fn sample_due(conn: &Connection, every_hours: u32) -> Result<bool> {
    if every_hours == 0 {
        return Ok(false);
    }
    let last: Option<String> = conn
        .query_row(
            "SELECT sampled_at FROM marketo_sample ORDER BY sample_id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let now = chrono::Utc::now();
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let due_before = stamp(now - chrono::Duration::hours(i64::from(every_hours)));
    Ok(last.is_none_or(|at| at <= due_before || at > stamp(now)))
}

/// Stores the sample `sync` made in run `run_id`, or why it could not be made; returns whether
/// it finds records missing where the last sample that could look found none (or there was
/// none): a new problem for the run's exit code.
pub(crate) fn store_sample(
    conn: &Connection,
    run_id: i64,
    sampled: &Result<Vec<Sampled>>,
) -> Result<bool> {
    let missing_before: Option<i64> = conn
        .query_row(
            "SELECT leads_missing + opportunities_missing + companies_missing + roles_missing
             FROM marketo_sample WHERE error IS NULL ORDER BY sample_id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let of = |object: Object| -> (usize, usize) {
        let found = sampled.as_ref().ok().into_iter().flatten();
        found
            .filter(|s| s.object == object)
            .map(|s| (s.asked, s.missing))
            .next()
            .unwrap_or_default()
    };
    let (leads_asked, leads_missing) = of(Object::Lead);
    let (opportunities_asked, opportunities_missing) = of(Object::Opportunity);
    let (companies_asked, companies_missing) = of(Object::Company);
    let (roles_asked, roles_missing) = of(Object::OpportunityRole);
    let error = sampled
        .as_ref()
        .err()
        .map(|err| crate::redact::redact(&crate::exit::error_line(err)).to_string());
    conn.execute(
        "INSERT INTO marketo_sample (run_id, sampled_at, leads_asked, leads_missing,
             opportunities_asked, opportunities_missing, companies_asked, companies_missing,
             roles_asked, roles_missing, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            run_id,
            crate::run::now(),
            leads_asked as i64,
            leads_missing as i64,
            opportunities_asked as i64,
            opportunities_missing as i64,
            companies_asked as i64,
            companies_missing as i64,
            roles_asked as i64,
            roles_missing as i64,
            error
        ],
    )?;
    Ok(
        leads_missing + opportunities_missing + companies_missing + roles_missing > 0
            && missing_before.unwrap_or(0) == 0,
    )
}

/// Whether a sample found a lead, an opportunity or a company missing, not only roles: then
/// plain `recheck` finds all (`recheck_command`).
pub(crate) fn more_than_roles_missing(sampled: &[Sampled]) -> bool {
    sampled
        .iter()
        .any(|s| s.missing > 0 && s.object != Object::OpportunityRole)
}

/// The command that finds all of what a sample found missing: `recheck` when a lead, an
/// opportunity or a company is missing (their roles, or what names the company, go again with
/// them), `recheck --roles` when only roles are.
pub(crate) fn recheck_command(more_than_roles_missing: bool) -> &'static str {
    if more_than_roles_missing {
        "oppsync recheck"
    } else {
        "oppsync recheck --roles"
    }
}

/// How many rowids `random_acknowledged` draws for each record it is to pick: enough for an
/// object that holds one acknowledged record in sixty-four or more.
const DRAWS_PER_PICK: usize = 64;

/// Up to `limit` Marketo ids of acknowledged records of `object`, chosen at random.
///
/// Picked by drawing rowids of `mkto_ack` at random and keeping those of `object`, so that a
/// sample looks up a few thousand rows by rowid, whatever the org's size. Sorting every
/// acknowledgement of the object by `random()` read each one through the primary key's index,
/// in key order, which is no order on disk for GUID keys: at 1M opportunities `check` took 5 s
/// (0.3 s now), in each run and once a day in `sync`.
/// When the draws find fewer than `limit` (the object holds fewer records, or is rare among
/// the acknowledgements), every acknowledgement of the object is sorted as before, which is
/// then cheap, as they are few.
fn random_acknowledged(conn: &Connection, object: Object, limit: usize) -> Result<Vec<String>> {
    // `+object`: SQLite would otherwise walk the object's whole range of the primary key's
    // index and test each rowid against the draws. The drawn rows are sorted by `random()`
    // again, as they come out in rowid order and `limit` may be fewer than were found.
    let drawn: Vec<String> = conn
        .prepare_cached(
            "WITH RECURSIVE draw(n, r) AS (
                 SELECT 0, NULL
                 UNION ALL
                 SELECT n + 1, 1 + abs(random() % (SELECT max(rowid) FROM mkto_ack))
                 FROM draw WHERE n < ?3
             )
             SELECT marketo_id FROM mkto_ack
             WHERE rowid IN (SELECT r FROM draw)
               AND +object = ?1 AND marketo_id IS NOT NULL AND payload <> ''
             ORDER BY random() LIMIT ?2",
        )?
        .query_map(
            params![object.name(), limit as i64, (limit * DRAWS_PER_PICK) as i64],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    if drawn.len() == limit {
        return Ok(drawn);
    }
    let rows = conn
        .prepare_cached(
            "SELECT marketo_id FROM mkto_ack
             WHERE object = ?1 AND marketo_id IS NOT NULL AND payload <> ''
             ORDER BY random() LIMIT ?2",
        )?
        .query_map(params![object.name(), limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Up to `limit` acknowledged records of `object` after key `after`, in key order, with their
/// Marketo ids; those already set back are not asked about again.
fn acknowledged(
    conn: &Connection,
    object: Object,
    after: &str,
    limit: usize,
) -> Result<Vec<(String, String)>> {
    let rows = conn
        .prepare_cached(
            "SELECT key, marketo_id FROM mkto_ack
             WHERE object = ?1 AND key > ?2 AND marketo_id IS NOT NULL AND payload <> ''
             ORDER BY key LIMIT ?3",
        )?
        .query_map(params![object.name(), after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The values of `field` in the records a query answer lists, or why nothing can be concluded
/// from it: it lists none, not even as an empty list, or says it has more than it lists (each
/// value asked about matches one record at most, and fewer are asked about than a page holds).
fn found(answer: &Value, field: &str) -> Result<HashSet<String>, &'static str> {
    if answer.get("moreResult").and_then(Value::as_bool) == Some(true) {
        return Err("says it has more records than it lists");
    }
    let records = answer
        .get("result")
        .and_then(Value::as_array)
        .ok_or("has no list of the records found")?;
    Ok(records
        .iter()
        .filter_map(|r| match r.get(field)? {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_lists_the_records_found_or_nothing_is_concluded() {
        let ids = found(
            &json!({"success": true, "result": [{"id": 7}, {"id": "8"}]}),
            "id",
        );
        assert_eq!(ids, Ok(HashSet::from(["7".to_string(), "8".to_string()])));
        assert_eq!(
            found(&json!({"success": true, "result": []}), "id"),
            Ok(HashSet::new())
        );
        assert!(found(&json!({"success": true}), "id").is_err());
        assert!(found(&json!({"result": {"id": 7}}), "id").is_err());
        assert!(found(&json!({"result": [{"id": 7}], "moreResult": true}), "id").is_err());
    }

    /// A database with `count` acknowledgements of each object in `objects`, interleaved in
    /// rowid order; a Marketo id is the object's letter (`letter`) and a number.
    fn acknowledged_db(objects: &[(Object, u32)]) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO run (run_id, command, args, started_at, outcome)
             VALUES (1, 'push', '[]', '2001-01-01T00:00:00Z', 'done')",
            [],
        )
        .unwrap();
        let most = objects.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let mut insert = conn
            .prepare(
                "INSERT INTO mkto_ack (object, key, payload, marketo_id, run_id, acked_at)
                 VALUES (?1, ?2, '{}', ?3, 1, '2001-01-01T00:00:00Z')",
            )
            .unwrap();
        for i in 0..most {
            for (object, _) in objects.iter().filter(|(_, n)| i < *n) {
                let name = object.name();
                insert
                    .execute(params![
                        name,
                        format!("{name}-{i:06}"),
                        format!("{}{i}", letter(*object))
                    ])
                    .unwrap();
            }
        }
        drop(insert);
        conn
    }

    /// The letter that starts the Marketo ids `acknowledged_db` gives `object`'s records.
    fn letter(object: Object) -> char {
        match object {
            Object::SalesPerson => 'S',
            Object::Company => 'C',
            Object::Lead => 'L',
            Object::Opportunity => 'O',
            Object::OpportunityRole => 'R',
        }
    }

    /// How many thousands of SQLite's steps a random pick of 150 roles takes.
    fn pick_steps(mut conn: Connection) -> u64 {
        let (picked, steps) = crate::db::steps_taken(&mut conn, |conn| {
            random_acknowledged(conn, Object::OpportunityRole, 150).unwrap()
        });
        assert_eq!(picked.len(), 150);
        steps
    }

    #[test]
    fn a_random_pick_reads_about_as_much_of_a_large_org_as_of_a_small_one() {
        let small = pick_steps(acknowledged_db(&[
            (Object::Lead, 2_000),
            (Object::OpportunityRole, 2_000),
        ]));
        let large = pick_steps(acknowledged_db(&[
            (Object::Lead, 40_000),
            (Object::OpportunityRole, 40_000),
        ]));
        // Sorting every role by random() took about twenty times the steps at twenty times the
        // records.
        assert!(
            large < small * 3 / 2,
            "{large} thousand steps for 40,000 roles against {small} for 2,000"
        );
    }

    #[test]
    fn a_random_pick_spans_every_acknowledgement_and_takes_all_of_a_rare_object() {
        let conn = acknowledged_db(&[
            (Object::Lead, 20_000),
            (Object::OpportunityRole, 20_000),
            (Object::Opportunity, 200),
            (Object::Company, 10),
        ]);
        // Neither a role set back for the next push nor one without a Marketo id is asked about.
        conn.execute_batch(
            "UPDATE mkto_ack SET payload = '' WHERE object = 'opportunity_role' AND rowid % 4 = 0;
             UPDATE mkto_ack SET marketo_id = NULL
             WHERE object = 'opportunity_role' AND rowid % 4 = 1;",
        )
        .unwrap();
        let roles = random_acknowledged(&conn, Object::OpportunityRole, 150).unwrap();
        let distinct: HashSet<&String> = roles.iter().collect();
        assert_eq!(distinct.len(), 150, "150 roles, each once: {roles:?}");
        assert!(roles.iter().all(|id| id.starts_with('R')), "{roles:?}");
        let numbers: Vec<u32> = roles.iter().map(|id| id[1..].parse().unwrap()).collect();
        let (first_half, second_half): (Vec<u32>, Vec<u32>) =
            numbers.iter().partition(|n| **n < 10_000);
        assert!(
            !first_half.is_empty() && !second_half.is_empty(),
            "picked from both halves: {numbers:?}"
        );
        let asked: HashSet<String> = roles.iter().cloned().collect();
        let sendable: i64 = conn
            .query_row(
                "SELECT count(*) FROM mkto_ack, json_each(?1) j
                 WHERE object = 'opportunity_role' AND marketo_id = j.value AND payload <> ''",
                [serde_json::to_string(&asked.iter().collect::<Vec<_>>()).unwrap()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            sendable, 150,
            "every role picked has a Marketo id and a payload"
        );
        // 200 opportunities among 40,210 acknowledgements are too few for the draws to find
        // 150 of them; 10 companies are fewer than asked for.
        let opportunities = random_acknowledged(&conn, Object::Opportunity, 150).unwrap();
        assert_eq!(opportunities.iter().collect::<HashSet<_>>().len(), 150);
        assert!(opportunities.iter().all(|id| id.starts_with('O')));
        let mut companies = random_acknowledged(&conn, Object::Company, 150).unwrap();
        companies.sort();
        let mut all: Vec<String> = (0..10).map(|i| format!("C{i}")).collect();
        all.sort();
        assert_eq!(companies, all);
    }
}
