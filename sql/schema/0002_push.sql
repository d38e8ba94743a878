-- Push: what Marketo acknowledged, what each push did per record, and every API call made.

-- The state Marketo last acknowledged, per object and key. A row is written only in the same
-- transaction as the outcome of the call that Marketo answered; the plan diffs against it.
--   object      'company' | 'lead' | 'opportunity' | 'opportunity_role'
--   key         the Marketo dedupe key as oppsync forms it: externalCompanyId, lower-cased
--               email, externalOpportunityId, or externalOpportunityId|email|role
--   payload     the JSON last sent and acknowledged (for roles, with the leadId used)
--   marketo_id  company id, lead id, or marketoGUID
CREATE TABLE mkto_ack (
    object      TEXT NOT NULL CHECK (object IN ('company', 'lead', 'opportunity', 'opportunity_role')),
    key         TEXT NOT NULL,
    payload     TEXT NOT NULL,
    marketo_id  TEXT,
    run_id      INTEGER NOT NULL REFERENCES run (run_id),
    acked_at    TEXT NOT NULL,
    PRIMARY KEY (object, key)
) STRICT;

-- Every per-record outcome of every push (and of every record push skipped before sending).
CREATE TABLE push_outcome (
    outcome_id  INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES run (run_id),
    object      TEXT NOT NULL,
    key         TEXT,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'skip')),
    status      TEXT NOT NULL,      -- created, updated, deleted, skipped (Marketo's words), or not_sent
    marketo_id  TEXT,
    reasons     TEXT,               -- JSON array of {code, message}, or oppsync's own reason
    at          TEXT NOT NULL
) STRICT;

CREATE INDEX push_outcome_by_key ON push_outcome (object, key);

-- Every HTTP call push made, answered or not. Never holds a token or a secret.
CREATE TABLE api_call (
    call_id      INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES run (run_id),
    method       TEXT NOT NULL,
    path         TEXT NOT NULL,     -- without the query string
    records      INTEGER NOT NULL DEFAULT 0,
    http_status  INTEGER,           -- NULL when no response arrived
    error_code   TEXT,              -- Marketo's errors[0].code, or the network error
    attempt      INTEGER NOT NULL,  -- 1 for the first try of a request
    duration_ms  INTEGER NOT NULL,
    at           TEXT NOT NULL
) STRICT;
