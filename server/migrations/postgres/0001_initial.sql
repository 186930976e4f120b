CREATE TABLE sites (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    secret TEXT,
    created_ms BIGINT NOT NULL,
    origins TEXT NOT NULL DEFAULT ''
);
CREATE TABLE agents (
    id BIGSERIAL PRIMARY KEY,
    site_id BIGINT NOT NULL REFERENCES sites(id),
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    capacity BIGINT NOT NULL DEFAULT 5,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    role BIGINT NOT NULL DEFAULT 0,
    auth_epoch BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX agents_site ON agents(site_id);
CREATE TABLE devices (
    agent_id BIGINT NOT NULL,
    device_id BYTEA NOT NULL,
    commands_acked BIGINT NOT NULL DEFAULT 0,
    last_login_ms BIGINT NOT NULL,
    PRIMARY KEY (agent_id, device_id)
);
CREATE TABLE visitors (
    id TEXT PRIMARY KEY,
    site_id BIGINT NOT NULL,
    external_id TEXT,
    name TEXT,
    email TEXT,
    attrs TEXT NOT NULL DEFAULT '[]',
    verified BIGINT NOT NULL DEFAULT 0,
    user_agent TEXT,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    delivered_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX visitors_external ON visitors(site_id, external_id);
CREATE TABLE page_views (
    id BIGSERIAL PRIMARY KEY,
    visitor_id TEXT NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    referrer TEXT,
    at_ms BIGINT NOT NULL
);
CREATE INDEX page_views_visitor ON page_views(visitor_id, id);
CREATE TABLE conversations (
    id BIGSERIAL PRIMARY KEY,
    site_id BIGINT NOT NULL,
    visitor_id TEXT NOT NULL,
    state BIGINT NOT NULL,
    assigned_agent BIGINT,
    opened_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    contact_email TEXT,
    handoffs BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX conversations_visitor ON conversations(visitor_id, id);
CREATE INDEX conversations_site_state ON conversations(site_id, state);
CREATE INDEX conversations_agent_state ON conversations(assigned_agent, state);
CREATE INDEX conversations_active_owner ON conversations(assigned_agent) WHERE state = 1;
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    client_id BYTEA NOT NULL UNIQUE,
    author_kind BIGINT NOT NULL,
    author_agent BIGINT,
    body TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    internal BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX messages_conversation ON messages(conversation_id, id);
CREATE TABLE actions (
    client_id BYTEA PRIMARY KEY,
    actor TEXT NOT NULL,
    seq BIGINT NOT NULL,
    outcome BYTEA NOT NULL
);
CREATE TABLE agent_events (
    agent_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    event BYTEA NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE TABLE visitor_events (
    visitor_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    conversation_id BIGINT,
    agent_message BIGINT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (visitor_id, seq)
);
-- Each recipient's newest seq. Its row is also the lock that orders two
-- nodes' writes to one recipient: a writer takes it (upsert ... RETURNING)
-- before its first event for that recipient and holds it to COMMIT.
CREATE TABLE log_heads (
    recipient TEXT PRIMARY KEY,
    head BIGINT NOT NULL
);
CREATE TABLE agent_changes (
    id BIGSERIAL PRIMARY KEY,
    agent_id BIGINT NOT NULL,
    kind BIGINT NOT NULL,
    at_ms BIGINT NOT NULL
);
-- The server's X25519 key, shared by every node (see identity.rs).
CREATE TABLE server_key (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    secret BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);
