-- Leads and opportunities whose Marketo id changed when Marketo acknowledged them again: one
-- was deleted in Marketo (by hand, or a lead merged into another) and createOrUpdate created it
-- anew or found the survivor. Marketo deletes a lead's or an opportunity's roles with it, and
-- the roles acknowledged here name the old one, so push sends them again
-- (`export::push::resend_roles_of_moved`). Written in the transaction that acknowledges the
-- lead or opportunity, so that a stop after it loses nothing; emptied once the roles are marked
-- to send.
CREATE TABLE mkto_moved (
    object      TEXT NOT NULL CHECK (object IN ('lead', 'opportunity')),
    key         TEXT NOT NULL,
    old_id      TEXT NOT NULL,
    new_id      TEXT NOT NULL,
    PRIMARY KEY (object, key)
) STRICT, WITHOUT ROWID;
