CREATE TABLE sites (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    secret TEXT,
    created_ms INTEGER NOT NULL
);
CREATE TABLE agents (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites(id),
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    capacity INTEGER NOT NULL DEFAULT 5,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE INDEX agents_site ON agents(site_id);
CREATE TABLE devices (
    agent_id INTEGER NOT NULL,
    device_id BLOB NOT NULL,
    commands_acked INTEGER NOT NULL DEFAULT 0,
    last_login_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, device_id)
) WITHOUT ROWID;
CREATE TABLE visitors (
    id TEXT PRIMARY KEY,
    site_id INTEGER NOT NULL,
    external_id TEXT,
    name TEXT,
    email TEXT,
    attrs TEXT NOT NULL DEFAULT '[]',
    verified INTEGER NOT NULL DEFAULT 0,
    user_agent TEXT,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX visitors_external ON visitors(site_id, external_id);
CREATE TABLE page_views (
    id INTEGER PRIMARY KEY,
    visitor_id TEXT NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    referrer TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX page_views_visitor ON page_views(visitor_id, id);
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL,
    visitor_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    assigned_agent INTEGER,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    contact_email TEXT
);
CREATE INDEX conversations_visitor ON conversations(visitor_id, id);
CREATE INDEX conversations_site_state ON conversations(site_id, state);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL,
    client_id BLOB NOT NULL UNIQUE,
    author_kind INTEGER NOT NULL,
    author_agent INTEGER,
    body TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX messages_conversation ON messages(conversation_id, id);
-- Idempotency: every applied action's original outcome, keyed by the id its
-- client generated.
CREATE TABLE actions (
    client_id BLOB PRIMARY KEY,
    actor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outcome BLOB NOT NULL
) WITHOUT ROWID;
-- Per-recipient durable event logs, replayed on resume.
CREATE TABLE agent_events (
    agent_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE visitor_events (
    visitor_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    conversation_id INTEGER,
    agent_message INTEGER,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (visitor_id, seq)
) WITHOUT ROWID;
-- Heads survive pruning, so seqs never restart after retention empties a log.
CREATE TABLE log_heads (
    recipient TEXT PRIMARY KEY,
    head INTEGER NOT NULL
) WITHOUT ROWID;
