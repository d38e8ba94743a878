-- Records Marketo refused for the values they carry, each with the payload it refused and
-- its answer (a record-level skip: 1001, 1002, 1003 a value wrong or missing, 1007 several
-- records match; `export::push::HELD_CODES`). Sent again unchanged, such a record would be
-- refused again, at a call per batch every cycle of a `sync --every`, until it changes in
-- Dynamics or someone mends it in Marketo: so push holds that payload back for
-- `[marketo] retry_refused_hours` (plan.rs, SENDABLE), and sends the record at once when its
-- payload changes. A record Marketo acknowledges leaves. Refusals that may pass by themselves
-- (718 a sales person not there yet, 1006 a field deleted, 1014 a failure in Marketo) are not
-- recorded here.
CREATE TABLE mkto_refused (
    object      TEXT NOT NULL,
    key         TEXT NOT NULL,
    payload     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    refused_at  TEXT NOT NULL,
    PRIMARY KEY (object, key)
) STRICT, WITHOUT ROWID;
