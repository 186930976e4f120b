//! PostgreSQL's schema and migrations, versioned in `schema_version`.
//!
//! The same tables as SQLite's (`schema.rs`) in PostgreSQL's types: BIGINT
//! for every integer (ids, times, seqs, flags), BIGSERIAL for generated ids,
//! BYTEA for bytes. Integer flags stay integers so that the store's SQL
//! (`verified = 1`) is the same on both engines.
//!
//! Several nodes may start (or `migrate` may run) at the same moment, so the
//! whole upgrade runs in one transaction holding an advisory lock: the
//! second node waits, then finds the schema current and does nothing.

use super::StoreError;
use super::sql::{Db, args, transaction};

/// Each entry upgrades the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- Presence's copy for Redis outages (issue 15, see store/presence_pg.rs):
-- each node's heartbeat (the database's clock, in ms, so node clocks do
-- not matter) and its live entries, written when they change. Read only
-- while the bus is down; a node not heard of for 12 s has no entries.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    heard_ms BIGINT NOT NULL
);
CREATE TABLE node_agents (
    node_id TEXT NOT NULL,
    agent_id BIGINT NOT NULL,
    site_id BIGINT NOT NULL,
    presence BIGINT NOT NULL,
    connections BIGINT NOT NULL,
    PRIMARY KEY (node_id, agent_id)
);
CREATE TABLE node_visitors (
    node_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    site_id BIGINT NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (node_id, visitor_id)
);
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Any fixed number: the advisory lock migrations take ("hfmigr").
const MIGRATE_LOCK: i64 = 0x6866_6d69_6772;

/// Bring the schema up to date. Safe to run from several nodes at once.
pub fn migrate(db: &dyn Db) -> Result<(), StoreError> {
    transaction(db, |db| {
        db.execute("SELECT pg_advisory_xact_lock(?1)", &args![MIGRATE_LOCK])?;
        db.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
        let current: i64 = match db.query_opt("SELECT version FROM schema_version", &args![])? {
            Some(r) => r.get(0)?,
            None => {
                db.execute("INSERT INTO schema_version (version) VALUES (0)", &args![])?;
                0
            }
        };
        let current = usize::try_from(current).unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(StoreError::Migrate(super::schema::MigrateError::TooNew {
                found: current,
                supported: SCHEMA_VERSION,
            }));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            db.batch(sql)?;
            db.execute(
                "UPDATE schema_version SET version = ?1",
                &args![i64::try_from(i + 1).unwrap_or(i64::MAX)],
            )?;
        }
        Ok(())
    })
}
