//! Schema and migrations, versioned by `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    // 2: auto-assignment counts each online agent's active conversations for
    // every new chat. Without this index that was a scan of all conversations
    // per agent, and 5,000 visitors opening chats with 100 agents took 49 s
    // instead of seconds (BENCHMARKS.md, reconnect storm).
    r#"
CREATE INDEX conversations_agent_state ON conversations(assigned_agent, state);
"#,
    // 3: chat ownership and trust. Roles; an epoch that revokes sessions
    // opened before a password change or a disable; agent-only messages
    // (notes, left-message details) that no visitor path may return; the
    // origins a site's widget may run on; how often a chat changed hands (a
    // new owner then needs its history); the change feed the running server
    // polls to act within a second on what the CLI did; and the owners of
    // open chats, for the grace-period sweep.
    r#"
ALTER TABLE agents ADD COLUMN role INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN auth_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN internal INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sites ADD COLUMN origins TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN handoffs INTEGER NOT NULL DEFAULT 0;
CREATE TABLE agent_changes (
    id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX conversations_active_owner ON conversations(assigned_agent) WHERE state = 1;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "database schema version {found} is newer than this server understands ({supported}); upgrade the server"
    )]
    TooNew { found: usize, supported: usize },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Bring the schema up to date, one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(MigrateError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Pragmas for every connection: WAL so readers never block the writer, and
/// FULL sync so a commit survives power loss before we ack it.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First: the pragmas below read the database too, and a connection
    // opened while the writer is busy must wait for it, not fail at once.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint (statement) journals stay in memory instead of spilling to
    // temp files: the writer opens one savepoint per op.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Plan each statement once. Without this, SQLite (built with STAT4)
    // re-prepares some cached statements on every new binding, which was
    // a sixth of the writer's CPU in the load profile (BENCHMARKS.md).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn indexes(conn: &Connection) -> Vec<String> {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'conversations'")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_version_1_database_upgrades_in_place_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // What a server from before migration 2 left behind.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO conversations (site_id, visitor_id, state, assigned_agent, opened_ms, updated_ms) \
                 VALUES (1, 'v', 1, 7, 0, 0)",
                [],
            )
            .unwrap();
            assert!(!indexes(&conn).contains(&"conversations_agent_state".to_string()));
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(usize::try_from(v).unwrap(), SCHEMA_VERSION);
        assert!(indexes(&conn).contains(&"conversations_agent_state".to_string()));
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM conversations WHERE assigned_agent = 7 AND state = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        // The assignment count uses the index instead of scanning.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM conversations WHERE assigned_agent = ?1 AND state = 1",
                [7],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("conversations_agent_state"), "{plan}");
        // Running it again is a no-op.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(
            None,
            "user_version",
            i64::try_from(SCHEMA_VERSION + 1).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrateError::TooNew { .. })
        ));
    }
}
