-- Marketo's describe of each object push writes, as push last read it, per instance and API
-- user: the fields and whether each is updateable. A push within `[marketo]
-- describe_max_age_hours` of it checks the fields its records carry against this row instead
-- of calling the describe endpoint again (Adobe: cache describe results for a day or more), so
-- that a cycle every few minutes does not spend up to five calls of the daily quota on them.
-- A row that lacks a field to send, or says it is not updateable, is never trusted: push
-- describes the object again. A record Marketo skips with 1006 (field not found) deletes its
-- object's rows, so the next push describes it again.
--   object        the oppsync object name (company, lead, opportunity, opportunity_role, sales_person)
--   fields        JSON object: field name -> whether it is updateable
--   described_at  when Marketo answered, UTC
--   run_id        the push that described it
CREATE TABLE marketo_describe (
    base_url      TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    object        TEXT NOT NULL,
    fields        TEXT NOT NULL,
    described_at  TEXT NOT NULL,
    run_id        INTEGER NOT NULL REFERENCES run (run_id),
    PRIMARY KEY (base_url, client_id, object)
) STRICT;
