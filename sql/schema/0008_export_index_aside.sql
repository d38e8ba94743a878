-- The indexes of export_row a full evaluation dropped while it stores the rows, with their SQL,
-- to build again once the rows are stored. A full evaluation commits after each export view, so
-- that the WAL frames already written are copied into the database while the next view is
-- evaluated (ARCHITECTURE.md, "Export rows"); one stopped before the end leaves its indexes
-- here, and the next full evaluation (the only thing a database in that state gets) builds them.
CREATE TABLE export_index_aside (
    name  TEXT PRIMARY KEY,
    sql   TEXT NOT NULL
) STRICT;
