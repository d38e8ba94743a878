-- The daily sample of what Marketo holds (`marketo_sample`, migrations 0015 and 0017) asks
-- about a random 300 acknowledged companies too: a company deleted in Marketo (by hand, or a
-- cleanup) stays acknowledged here and is never sent again, while its leads and opportunities
-- go on naming it; `oppsync recheck` finds it and sets it back with what names it, and the
-- sample is what tells an operator to run it. Samples stored before hold 0 for both.
ALTER TABLE marketo_sample ADD COLUMN companies_asked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE marketo_sample ADD COLUMN companies_missing INTEGER NOT NULL DEFAULT 0;
