//! The store's schema: its migrations, applied in order at open.

use super::*;

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many
/// ran. Append only.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value
);
CREATE TABLE pins (
    server       TEXT PRIMARY KEY NOT NULL,
    fingerprint  BLOB NOT NULL,
    pinned_at_ms INTEGER NOT NULL
);
-- `action` holds the whole encoded ClientMsg::Command, so a resend is
-- byte-for-byte what was first sent.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY NOT NULL,
    id         BLOB NOT NULL UNIQUE,
    action     BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE conversations (
    id              INTEGER PRIMARY KEY NOT NULL,
    info            TEXT NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    last_read       INTEGER NOT NULL DEFAULT 0,
    delivered_up_to INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
    local        INTEGER PRIMARY KEY AUTOINCREMENT,
    sort_key     INTEGER NOT NULL,
    conversation INTEGER NOT NULL,
    message      INTEGER,
    client_id    BLOB NOT NULL UNIQUE,
    author       TEXT NOT NULL,
    from_visitor INTEGER NOT NULL,
    body         TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    state        INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_by_server_id ON messages(message) WHERE message IS NOT NULL;
CREATE INDEX messages_by_conversation ON messages(conversation, sort_key);
CREATE TABLE visitors (
    id   TEXT PRIMARY KEY NOT NULL,
    info TEXT NOT NULL
);
"#,
    r#"
-- Protocol version 3: the file a message carries, as JSON (the wire's
-- AttachmentInfo); NULL for a message without one and for every message
-- cached before.
ALTER TABLE messages ADD COLUMN attachment TEXT;
"#,
    r#"
-- Files being sent (ClientHandle::send_file): `file` is the copy under the
-- data dir, `server_id` the server's upload id once created. A row leaves
-- when its send is acked (with the outbox row, in one transaction) or is
-- cancelled. state: 0 uploading, 1 sending (the Send is in the outbox),
-- 2 failed (`error` says why).
CREATE TABLE uploads (
    id           BLOB PRIMARY KEY NOT NULL,
    conversation INTEGER NOT NULL,
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    file         TEXT NOT NULL,
    total        INTEGER NOT NULL,
    server_id    TEXT,
    sent         INTEGER NOT NULL DEFAULT 0,
    state        INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_ms   INTEGER NOT NULL
);
"#,
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    loop {
        // Re-read inside an IMMEDIATE transaction so two processes opening
        // the same file at once cannot both run one migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known,
            });
        }
        let Some(sql) = usize::try_from(found).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}
