-- Proactive invitations (issue 17). A rule is one admin's "invite visitors
-- who ..." for a site; every condition it has must hold. An invitation is
-- one rule firing for one visitor, kept so the site can count how many were
-- shown, accepted and ignored. At most one fires a visit, and the writer
-- checks that here, so two nodes (or two tabs) cannot both fire one.
CREATE TABLE invite_rules (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    url_pattern TEXT,
    site_secs INTEGER,
    page_secs INTEGER,
    returning_visitor INTEGER,
    referrer TEXT,
    campaign TEXT,
    attr_key TEXT,
    attr_value TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL
);
CREATE INDEX invite_rules_site ON invite_rules (site_id);
CREATE TABLE invitations (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL,
    rule_id INTEGER NOT NULL,
    visitor_id TEXT NOT NULL,
    text TEXT NOT NULL,
    fired_ms INTEGER NOT NULL,
    shown_ms INTEGER,
    accepted_ms INTEGER,
    dismissed_ms INTEGER,
    conversation_id INTEGER
);
CREATE INDEX invitations_visitor ON invitations (visitor_id, fired_ms);
CREATE INDEX invitations_rule ON invitations (rule_id);
