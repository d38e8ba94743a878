-- Incremental pulls from the live Web API: per entity set, where the next pull starts.
--   mode        'change_tracking': the next pull GETs delta_link (Prefer: odata.track-changes)
--               'watermark': change tracking is off for the table; the next pull asks for
--               modifiedon after watermark (with an overlap), and deletes need --full
--   delta_link  the @odata.deltaLink of the last pull whose every page was staged, verbatim
--   watermark   the greatest modifiedon staged, for watermark mode
CREATE TABLE pull_state (
    entity_set  TEXT PRIMARY KEY,
    mode        TEXT NOT NULL CHECK (mode IN ('change_tracking', 'watermark')),
    delta_link  TEXT,
    watermark   TEXT,
    run_id      INTEGER NOT NULL REFERENCES run (run_id),
    updated_at  TEXT NOT NULL
) STRICT;
