-- The daily sample of what Marketo holds (`marketo_sample`, migration 0015) asks about a random
-- 150 acknowledged roles too: a role deleted in Marketo on its own, while its lead and
-- opportunity stay, is found only by `oppsync recheck --roles`, and the sample is what tells an
-- operator to run it. Samples stored before hold 0 for both.
ALTER TABLE marketo_sample ADD COLUMN roles_asked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE marketo_sample ADD COLUMN roles_missing INTEGER NOT NULL DEFAULT 0;
