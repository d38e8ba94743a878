-- The lookup indexes of staging tables a pull dropped because they were empty when it began
-- staging into them (a first pull), with their SQL, to build once the pull's pages are staged.
-- Ids in a real org come in no order, so inserting a page's records into indexes keyed by them
-- rewrites about one leaf per record; building each index once, from a sort, costs a fraction
-- of that (ARCHITECTURE.md, `src/stage.rs`). A pull stopped before the end leaves them here,
-- and the next refresh of the export rows (every writing command runs one) builds them. Unique
-- indexes are never set aside: they are constraints, not lookups.
CREATE TABLE staging_index_aside (
    name  TEXT PRIMARY KEY,
    sql   TEXT NOT NULL
) STRICT;
