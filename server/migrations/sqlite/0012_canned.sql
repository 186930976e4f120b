-- Canned replies (issue 17): a site's list (owner_id 0), which its admins
-- manage, and each agent's own (owner_id = the agent). 0 rather than NULL
-- for the site's, so the UNIQUE constraint holds for that list too (NULLs
-- never collide). shortcut_key is the shortcut in lower case: one list
-- never holds `Refund` and `refund`, whichever node wrote them.
CREATE TABLE canned_replies (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL,
    owner_id INTEGER NOT NULL DEFAULT 0,
    shortcut TEXT NOT NULL,
    shortcut_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    UNIQUE (site_id, owner_id, shortcut_key)
);
