//! The local SQLite store: this device's durable truth.
//!
//! Everything the promise rests on lives here: the outbox (written before the
//! first send, deleted only on the server's ack), the event cursor (written in
//! the same transaction as the data the event changed), and the pinned server
//! fingerprints. The conversations, messages and visitors beside them are a
//! cache that lets the app draw at once and be read offline; the server
//! refreshes them after every login.
//!
//! One [`Store`] (the client core's) writes; the UI may open more for reading.
//! WAL lets those readers run while the writer commits. `synchronous=FULL`
//! because an ack we send must never refer to data a power cut can undo.
//!
//! Cached rows that no longer decode (say, after an upgrade changed a type)
//! are skipped with a warning rather than failing the whole read: the server
//! sends them again. The outbox is the exception: a row that will not decode
//! is an error, because dropping it would lose an action.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_protocol::agent::{
    Action, AgentId, Author, ChatMessage, ClientMsg, Command, CommandResult, ConversationId,
    ConversationInfo, Event, MessageId, Outcome, Seq, SiteId, Snapshot, VisitorInfo,
};
use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::ids::MsgId;
use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior, params};

use crate::error::StoreError;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Messages still in the outbox have no server id yet, so they sort after
/// every server-committed message, in command order. Server message ids stay
/// far below this.
pub const QUEUED_SORT_BASE: i64 = 1 << 62;

/// How many recent messages per conversation [`Store::cached_workspace`]
/// returns.
pub const RECENT_PER_CONVERSATION: u32 = 50;

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many
/// ran. Append only.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

const MESSAGE_COLUMNS: &str =
    "sort_key, conversation, message, client_id, author, body, at_ms, state";

/// Where a message sits in its conversation; pass it back to
/// [`Store::messages_page`] to page further back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageOrder(pub i64);

/// How far a message has got. Only the agent's own messages move past
/// `Sent`; messages from others are stored as `Sent` (the server has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// In the local outbox, not yet acked by the server.
    Queued,
    /// Committed by the server.
    Sent,
    /// The visitor's devices have received it.
    Delivered,
    /// The server durably refused it (see the `CommandRejected` update).
    Failed,
}

impl DeliveryState {
    fn to_sql(self) -> i64 {
        match self {
            DeliveryState::Queued => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Failed => 3,
        }
    }

    fn from_sql(v: i64) -> Option<Self> {
        Some(match v {
            0 => DeliveryState::Queued,
            1 => DeliveryState::Sent,
            2 => DeliveryState::Delivered,
            3 => DeliveryState::Failed,
            _ => return None,
        })
    }
}

/// A cached message with its local delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub order: MessageOrder,
    pub conversation: ConversationId,
    /// The server's id; `None` while the message is still queued locally.
    pub message: Option<MessageId>,
    /// The sender's id: the key a message is deduplicated by.
    pub client_id: MsgId,
    pub author: Author,
    pub body: String,
    pub at_ms: i64,
    pub state: DeliveryState,
}

/// A cached conversation with its unread count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub info: ConversationInfo,
    /// Visitor messages newer than `last_read`.
    pub unread: u32,
    pub last_read: MessageId,
    pub last_message: Option<StoredMessage>,
}

/// Who this device is logged in as (from the last `LoginOk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub agent: AgentId,
    pub display_name: String,
    pub site: SiteId,
}

/// The server address and username a store belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub server: String,
    pub username: String,
}

/// One unacked command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: Seq,
    pub id: MsgId,
    pub action: Action,
    pub created_ms: i64,
}

/// Everything the UI needs to draw before the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub account: Option<Account>,
    pub session: Option<Session>,
    pub device_id: MsgId,
    /// The last applied event seq; `None` for a store that has never synced.
    pub cursor: Option<Seq>,
    /// Most recently updated first.
    pub conversations: Vec<ConversationSummary>,
    /// Up to [`RECENT_PER_CONVERSATION`] latest messages per conversation,
    /// oldest first.
    pub recent: HashMap<ConversationId, Vec<StoredMessage>>,
    /// The visitor list as last seen (refreshed after login).
    pub visitors: Vec<VisitorInfo>,
    /// Commands in the outbox.
    pub unsent: usize,
}

/// What applying an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventEffect {
    /// A message was stored. `new` is false when it was already there (the
    /// server echoing this device's own message): update it, don't add it.
    Message {
        message: StoredMessage,
        new: bool,
    },
    Conversation(ConversationInfo),
    /// These of the agent's messages became delivered.
    Delivered {
        conversation: ConversationId,
        up_to: MessageId,
        changed: Vec<StoredMessage>,
    },
    /// Nothing to show (a message already stored under another client id).
    Nothing,
}

/// A command that an ack removed from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedCommand {
    pub seq: Seq,
    pub id: MsgId,
    pub action: Action,
    /// The server's result, when the ack carried one.
    pub outcome: Option<Outcome>,
    /// The local message a `Send` created, as it is now.
    pub message: Option<StoredMessage>,
}

/// The local store. See the module docs.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    device_id: MsgId,
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(v))
}

fn to_u64(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("negative value {v}"),
    })
}

fn msg_id(bytes: &[u8], what: &'static str) -> Result<MsgId> {
    <[u8; 16]>::try_from(bytes)
        .map(MsgId)
        .map_err(|_| StoreError::Corrupt {
            what,
            detail: format!("id of {} bytes", bytes.len()),
        })
}

fn to_json<T: serde::Serialize>(v: &T, what: &'static str) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Encode {
        what,
        detail: e.to_string(),
    })
}

fn meta_get<T: FromSql>(conn: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, Option<T>>(0))
        .optional()
        .map(Option::flatten)
}

fn meta_set(conn: &Connection, key: &str, value: &dyn ToSql) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
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

/// One `messages` row as SQLite returns it.
struct RawMessage {
    sort_key: i64,
    conversation: i64,
    message: Option<i64>,
    client_id: Vec<u8>,
    author: String,
    body: String,
    at_ms: i64,
    state: i64,
}

impl RawMessage {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            sort_key: r.get(0)?,
            conversation: r.get(1)?,
            message: r.get(2)?,
            client_id: r.get(3)?,
            author: r.get(4)?,
            body: r.get(5)?,
            at_ms: r.get(6)?,
            state: r.get(7)?,
        })
    }

    fn decode(self) -> Result<StoredMessage> {
        let author = serde_json::from_str(&self.author).map_err(|e| StoreError::Corrupt {
            what: "message author",
            detail: e.to_string(),
        })?;
        let state = DeliveryState::from_sql(self.state).ok_or_else(|| StoreError::Corrupt {
            what: "message state",
            detail: format!("unknown state {}", self.state),
        })?;
        Ok(StoredMessage {
            order: MessageOrder(self.sort_key),
            conversation: to_u64(self.conversation, "conversation id")?,
            message: self.message.map(|m| to_u64(m, "message id")).transpose()?,
            client_id: msg_id(&self.client_id, "message client id")?,
            author,
            body: self.body,
            at_ms: self.at_ms,
            state,
        })
    }
}

/// Keep the rows that decode; log the others (see the module docs).
fn decode_cached(raw: Vec<RawMessage>) -> Vec<StoredMessage> {
    raw.into_iter()
        .filter_map(|r| match r.decode() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("skipping a cached message that does not decode: {e}");
                None
            }
        })
        .collect()
}

fn message_by_client_id(conn: &Connection, id: &MsgId) -> Result<Option<StoredMessage>> {
    let raw = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE client_id = ?1"
        ))?
        .query_row([&id.0[..]], RawMessage::from_row)
        .optional()?;
    raw.map(RawMessage::decode).transpose()
}

fn messages_page(
    conn: &Connection,
    conversation: ConversationId,
    before: Option<MessageOrder>,
    limit: u32,
) -> Result<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE conversation = ?1 AND sort_key < ?2
         ORDER BY sort_key DESC LIMIT ?3"
    ))?;
    let raw = stmt
        .query_map(
            params![
                to_i64(conversation)?,
                before.map_or(i64::MAX, |o| o.0),
                i64::from(limit)
            ],
            RawMessage::from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut page = decode_cached(raw);
    page.reverse();
    Ok(page)
}

fn read_outbox(conn: &Connection, up_to: Option<Seq>) -> Result<Vec<OutboxEntry>> {
    let limit = match up_to {
        Some(s) => to_i64(s)?,
        None => i64::MAX,
    };
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, action, created_ms FROM outbox WHERE seq <= ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(seq, id, blob, created_ms)| {
            let seq = to_u64(seq, "outbox seq")?;
            let id = msg_id(&id, "outbox id")?;
            let corrupt = |detail: String| StoreError::Corrupt {
                what: "outbox command",
                detail,
            };
            match ClientMsg::decode(&blob) {
                Ok(ClientMsg::Command(c)) if c.seq == seq && c.id == id => Ok(OutboxEntry {
                    seq,
                    id,
                    action: c.action,
                    created_ms,
                }),
                Ok(_) => Err(corrupt(format!("row {seq} holds another message"))),
                Err(e) => Err(corrupt(format!("row {seq}: {e}"))),
            }
        })
        .collect()
}

fn upsert_conversation(conn: &Connection, info: &ConversationInfo) -> Result<()> {
    // Upsert, not replace: last_read and delivered_up_to are local.
    conn.prepare_cached(
        "INSERT INTO conversations(id, info, updated_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET info = excluded.info,
                                       updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![
        to_i64(info.id)?,
        to_json(info, "conversation")?,
        info.updated_at_ms
    ])?;
    Ok(())
}

/// Store a server message, merging it into the row of the same client id if
/// there is one (this device's own message coming back as an event).
fn upsert_message(conn: &Connection, m: &ChatMessage) -> Result<EventEffect> {
    let message = to_i64(m.message)?;
    let conversation = to_i64(m.conversation)?;
    let author = to_json(&m.author, "message author")?;
    let from_visitor = matches!(m.author, Author::Visitor { .. });
    let existing: Option<i64> = conn
        .prepare_cached("SELECT local FROM messages WHERE client_id = ?1")?
        .query_row([&m.client_id.0[..]], |r| r.get(0))
        .optional()?;
    let new = match existing {
        Some(local) => {
            conn.prepare_cached(
                "UPDATE OR IGNORE messages SET
                    message = ?2, sort_key = ?2, conversation = ?3, author = ?4,
                    from_visitor = ?5, body = ?6, at_ms = ?7,
                    state = CASE
                        WHEN state = ?8 OR ?2 <= COALESCE((SELECT delivered_up_to
                            FROM conversations WHERE id = ?3), 0) THEN ?8
                        ELSE ?9 END
                 WHERE local = ?1",
            )?
            .execute(params![
                local,
                message,
                conversation,
                author,
                from_visitor,
                m.body,
                m.at_ms,
                DeliveryState::Delivered.to_sql(),
                DeliveryState::Sent.to_sql(),
            ])?;
            false
        }
        None => {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO messages
                        (sort_key, conversation, message, client_id, author, from_visitor,
                         body, at_ms, state)
                     VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6, ?7,
                        CASE WHEN ?5 = 0 AND ?1 <= COALESCE((SELECT delivered_up_to
                            FROM conversations WHERE id = ?2), 0) THEN ?8 ELSE ?9 END)",
                )?
                .execute(params![
                    message,
                    conversation,
                    &m.client_id.0[..],
                    author,
                    from_visitor,
                    m.body,
                    m.at_ms,
                    DeliveryState::Delivered.to_sql(),
                    DeliveryState::Sent.to_sql(),
                ])?;
            if inserted == 0 {
                // The same server message under another client id: a server
                // bug, but showing it twice would be ours.
                return Ok(EventEffect::Nothing);
            }
            true
        }
    };
    match message_by_client_id(conn, &m.client_id)? {
        Some(message) => Ok(EventEffect::Message { message, new }),
        None => Ok(EventEffect::Nothing),
    }
}

fn mark_delivered(
    conn: &Connection,
    conversation: ConversationId,
    up_to: MessageId,
) -> Result<EventEffect> {
    let conv = to_i64(conversation)?;
    let upto = to_i64(up_to)?;
    // Remembered per conversation so a message whose ack or echo arrives
    // after this event still shows as delivered.
    conn.prepare_cached(
        "UPDATE conversations SET delivered_up_to = MAX(delivered_up_to, ?2) WHERE id = ?1",
    )?
    .execute(params![conv, upto])?;
    let ids = conn
        .prepare_cached(
            "SELECT client_id FROM messages
             WHERE conversation = ?1 AND from_visitor = 0 AND message IS NOT NULL
               AND message <= ?2 AND state = ?3",
        )?
        .query_map(params![conv, upto, DeliveryState::Sent.to_sql()], |r| {
            r.get::<_, Vec<u8>>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    conn.prepare_cached(
        "UPDATE messages SET state = ?4
         WHERE conversation = ?1 AND from_visitor = 0 AND message IS NOT NULL
           AND message <= ?2 AND state = ?3",
    )?
    .execute(params![
        conv,
        upto,
        DeliveryState::Sent.to_sql(),
        DeliveryState::Delivered.to_sql()
    ])?;
    let mut changed = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(m) = message_by_client_id(conn, &msg_id(&id, "message client id")?)? {
            changed.push(m);
        }
    }
    Ok(EventEffect::Delivered {
        conversation,
        up_to,
        changed,
    })
}

/// Bring a local `Send` message up to date with its ack.
fn settle_local_message(
    conn: &Connection,
    client_id: &MsgId,
    outcome: Option<&Outcome>,
) -> Result<Option<StoredMessage>> {
    let id = &client_id.0[..];
    match outcome {
        Some(Outcome::Done {
            message: Some(m),
            at_ms,
            ..
        }) => {
            let m = to_i64(*m)?;
            // `message IS NULL`: the echo may have filled it in already.
            conn.prepare_cached(
                "UPDATE OR IGNORE messages SET message = ?2, sort_key = ?2, at_ms = ?3,
                    state = CASE WHEN ?2 <= COALESCE((SELECT delivered_up_to
                        FROM conversations WHERE id = messages.conversation), 0)
                        THEN ?4 ELSE ?5 END
                 WHERE client_id = ?1 AND message IS NULL",
            )?
            .execute(params![
                id,
                m,
                at_ms,
                DeliveryState::Delivered.to_sql(),
                DeliveryState::Sent.to_sql()
            ])?;
        }
        Some(Outcome::Rejected { .. }) => {
            conn.prepare_cached(
                "UPDATE messages SET state = ?2 WHERE client_id = ?1 AND message IS NULL",
            )?
            .execute(params![id, DeliveryState::Failed.to_sql()])?;
        }
        // Acked without a result we can use (the result went with an
        // earlier ack, or LoginOk covered it): committed, id to follow in
        // the echo.
        Some(Outcome::Done { message: None, .. }) | None => {
            conn.prepare_cached(
                "UPDATE messages SET state = ?2 WHERE client_id = ?1 AND state = ?3",
            )?
            .execute(params![
                id,
                DeliveryState::Sent.to_sql(),
                DeliveryState::Queued.to_sql()
            ])?;
        }
    }
    message_by_client_id(conn, client_id)
}

fn visitors(conn: &Connection) -> Result<Vec<VisitorInfo>> {
    let rows = conn
        .prepare_cached("SELECT info FROM visitors ORDER BY id")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .iter()
        .filter_map(|j| match serde_json::from_str(j) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("skipping a cached visitor that does not decode: {e}");
                None
            }
        })
        .collect())
}

fn conversations(conn: &Connection) -> Result<Vec<ConversationSummary>> {
    let rows = conn
        .prepare_cached(
            "SELECT c.info, c.last_read,
                    (SELECT COUNT(*) FROM messages m
                     WHERE m.conversation = c.id AND m.from_visitor = 1
                       AND m.sort_key > c.last_read AND m.sort_key < ?1)
             FROM conversations c ORDER BY c.updated_at_ms DESC, c.id DESC",
        )?
        .query_map([QUEUED_SORT_BASE], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (json, last_read, unread) in rows {
        let info: ConversationInfo = match serde_json::from_str(&json) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("skipping a cached conversation that does not decode: {e}");
                continue;
            }
        };
        let last_message = messages_page(conn, info.id, None, 1)?.pop();
        out.push(ConversationSummary {
            info,
            unread: u32::try_from(unread).unwrap_or(u32::MAX),
            last_read: to_u64(last_read, "last read")?,
            last_message,
        });
    }
    Ok(out)
}

impl Store {
    /// Open (creating if needed) the store at `path` and bring its schema up
    /// to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, path = %path.display(), "local store is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn, &path)?;
        let device_id = {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = match meta_get::<Vec<u8>>(&tx, "device_id")? {
                Some(b) => msg_id(&b, "device id")?,
                None => {
                    // Generated once: a new store is a new device.
                    let id =
                        MsgId::generate(u64::try_from(now_ms()).unwrap_or(0), &mut rand::rng());
                    meta_set(&tx, "device_id", &&id.0[..])?;
                    id
                }
            };
            tx.commit()?;
            id
        };
        Ok(Self {
            conn,
            path,
            device_id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This installation's device id, generated when the store was created.
    pub fn device_id(&self) -> MsgId {
        self.device_id
    }

    /// The last applied event seq; `None` if the store never synced.
    pub fn cursor(&self) -> Result<Option<Seq>> {
        meta_get::<i64>(&self.conn, "cursor")?
            .map(|c| to_u64(c, "cursor"))
            .transpose()
    }

    /// The highest command seq the server has acked.
    pub fn commands_acked(&self) -> Result<Seq> {
        Ok(meta_get::<i64>(&self.conn, "commands_acked")?
            .map(|c| to_u64(c, "commands acked"))
            .transpose()?
            .unwrap_or(0))
    }

    pub fn account(&self) -> Result<Option<Account>> {
        let server = meta_get::<String>(&self.conn, "account_server")?;
        let username = meta_get::<String>(&self.conn, "account_username")?;
        Ok(server
            .zip(username)
            .map(|(server, username)| Account { server, username }))
    }

    pub fn set_account(&mut self, server: &str, username: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        meta_set(&tx, "account_server", &server)?;
        meta_set(&tx, "account_username", &username)?;
        tx.commit()?;
        Ok(())
    }

    pub fn session(&self) -> Result<Option<Session>> {
        let agent = meta_get::<i64>(&self.conn, "agent")?;
        let name = meta_get::<String>(&self.conn, "display_name")?;
        let site = meta_get::<i64>(&self.conn, "site")?;
        match (agent, name, site) {
            (Some(agent), Some(display_name), Some(site)) => Ok(Some(Session {
                agent: to_u64(agent, "agent id")?,
                display_name,
                site: to_u64(site, "site id")?,
            })),
            _ => Ok(None),
        }
    }

    pub fn set_session(&mut self, s: &Session) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        meta_set(&tx, "agent", &to_i64(s.agent)?)?;
        meta_set(&tx, "display_name", &s.display_name)?;
        meta_set(&tx, "site", &to_i64(s.site)?)?;
        tx.commit()?;
        Ok(())
    }

    /// The fingerprint pinned for `server` (a `host:port`), if any.
    pub fn pinned_fingerprint(&self, server: &str) -> Result<Option<Fingerprint>> {
        let raw: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT fingerprint FROM pins WHERE server = ?1")?
            .query_row([server], |r| r.get(0))
            .optional()?;
        raw.map(|b| {
            <[u8; 32]>::try_from(b.as_slice())
                .map(Fingerprint)
                .map_err(|_| StoreError::Corrupt {
                    what: "pinned fingerprint",
                    detail: format!("{} bytes", b.len()),
                })
        })
        .transpose()
    }

    /// Pin (or, after an explicit user decision, re-pin) `server`'s key.
    pub fn pin_fingerprint(&mut self, server: &str, fingerprint: &Fingerprint) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO pins(server, fingerprint, pinned_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(server) DO UPDATE SET fingerprint = excluded.fingerprint,
                                                   pinned_at_ms = excluded.pinned_at_ms",
            )?
            .execute(params![server, &fingerprint.0[..], now_ms()])?;
        Ok(())
    }

    /// Durably add a command to the outbox under `seq` (which must be the
    /// in-memory outbox's `next_seq`). A `Send` also stores its message as
    /// `Queued`, in the same transaction, so the UI can show it at once.
    pub fn enqueue(
        &mut self,
        seq: Seq,
        id: MsgId,
        action: &Action,
        now_ms: i64,
    ) -> Result<Option<StoredMessage>> {
        let command = ClientMsg::Command(Command {
            id,
            seq,
            action: action.clone(),
        })
        .encode();
        let seq_i = to_i64(seq)?;
        let session = self.session()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO outbox(seq, id, action, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![seq_i, &id.0[..], command, now_ms])?;
        if let Action::Send { conversation, body } = action {
            let author = Author::Agent {
                agent: session.as_ref().map_or(0, |s| s.agent),
                name: session.map(|s| s.display_name).unwrap_or_default(),
            };
            let sort_key = QUEUED_SORT_BASE
                .checked_add(seq_i)
                .ok_or(StoreError::OutOfRange(seq))?;
            tx.prepare_cached(
                "INSERT INTO messages
                    (sort_key, conversation, message, client_id, author, from_visitor,
                     body, at_ms, state)
                 VALUES (?1, ?2, NULL, ?3, ?4, 0, ?5, ?6, ?7)",
            )?
            .execute(params![
                sort_key,
                to_i64(*conversation)?,
                &id.0[..],
                to_json(&author, "message author")?,
                body,
                now_ms,
                DeliveryState::Queued.to_sql()
            ])?;
        }
        let stored = message_by_client_id(&tx, &id)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Every unacked command, in seq order.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        read_outbox(&self.conn, None)
    }

    /// Renumber every outbox command to follow `base`, and record `base` as
    /// acked. For a server that has committed more of this device's seqs
    /// than this store knows (the store was restored from an older copy):
    /// the ids, not the seqs, make resends idempotent.
    pub fn rebase_outbox(&mut self, base: Seq) -> Result<Vec<OutboxEntry>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let entries = read_outbox(&tx, None)?;
        tx.prepare_cached("DELETE FROM outbox")?.execute([])?;
        let mut out = Vec::with_capacity(entries.len());
        let mut seq = base;
        for e in entries {
            seq = seq.checked_add(1).ok_or(StoreError::OutOfRange(seq))?;
            let command = ClientMsg::Command(Command {
                id: e.id,
                seq,
                action: e.action.clone(),
            })
            .encode();
            tx.prepare_cached(
                "INSERT INTO outbox(seq, id, action, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![to_i64(seq)?, &e.id.0[..], command, e.created_ms])?;
            out.push(OutboxEntry { seq, ..e });
        }
        meta_set(&tx, "commands_acked", &to_i64(base)?)?;
        tx.commit()?;
        Ok(out)
    }

    /// Commands in the outbox.
    pub fn unsent(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM outbox")?
            .query_row([], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// A cumulative ack: remove every command with `seq <= up_to`, record
    /// `up_to`, and settle the messages they created, in one transaction.
    pub fn apply_ack(
        &mut self,
        up_to: Seq,
        results: &[CommandResult],
    ) -> Result<Vec<AckedCommand>> {
        let up_to_i = to_i64(up_to)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let acked_before = meta_get::<i64>(&tx, "commands_acked")?.unwrap_or(0);
        let entries = read_outbox(&tx, Some(up_to))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let outcome = results
                .iter()
                .find(|r| r.seq == e.seq && r.id == e.id)
                .map(|r| r.outcome.clone());
            let message = match e.action {
                Action::Send { .. } => settle_local_message(&tx, &e.id, outcome.as_ref())?,
                _ => None,
            };
            out.push(AckedCommand {
                seq: e.seq,
                id: e.id,
                action: e.action,
                outcome,
                message,
            });
        }
        tx.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?
            .execute([up_to_i])?;
        meta_set(&tx, "commands_acked", &acked_before.max(up_to_i))?;
        tx.commit()?;
        Ok(out)
    }

    /// Apply event `seq` and advance the cursor to it, in one transaction.
    pub fn apply_event(&mut self, seq: Seq, event: &Event) -> Result<EventEffect> {
        let seq = to_i64(seq)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let effect = match event {
            Event::Message(m) => upsert_message(&tx, m)?,
            Event::Conversation(c) => {
                upsert_conversation(&tx, c)?;
                EventEffect::Conversation(c.clone())
            }
            Event::Delivered {
                conversation,
                message,
            } => mark_delivered(&tx, *conversation, *message)?,
        };
        meta_set(&tx, "cursor", &seq)?;
        tx.commit()?;
        Ok(effect)
    }

    /// Replace cached conversations and messages with a snapshot and set the
    /// cursor to its seq, in one transaction. Messages still queued in the
    /// outbox are kept (the server has not seen them yet); `last_read` is kept
    /// for conversations that are still there.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let ids = snapshot
            .conversations
            .iter()
            .map(|c| to_i64(c.id))
            .collect::<Result<Vec<_>>>()?;
        let ids_json = to_json(&ids, "conversation ids")?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for c in &snapshot.conversations {
            upsert_conversation(&tx, c)?;
        }
        tx.prepare_cached(
            "DELETE FROM conversations WHERE id NOT IN (SELECT value FROM json_each(?1))",
        )?
        .execute([ids_json])?;
        tx.prepare_cached("DELETE FROM messages WHERE state != ?1")?
            .execute([DeliveryState::Queued.to_sql()])?;
        for m in &snapshot.messages {
            upsert_message(&tx, m)?;
        }
        meta_set(&tx, "cursor", &to_i64(snapshot.seq)?)?;
        tx.commit()?;
        Ok(())
    }

    /// Replace the cached visitor list.
    pub fn replace_visitors(&mut self, visitors: &[VisitorInfo]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM visitors")?.execute([])?;
        for v in visitors {
            tx.prepare_cached("INSERT OR REPLACE INTO visitors(id, info) VALUES (?1, ?2)")?
                .execute(params![v.id, to_json(v, "visitor")?])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Update some cached visitors and forget others.
    pub fn update_visitors<'a>(
        &mut self,
        upserts: impl IntoIterator<Item = &'a VisitorInfo>,
        removed: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for v in upserts {
            tx.prepare_cached("INSERT OR REPLACE INTO visitors(id, info) VALUES (?1, ?2)")?
                .execute(params![v.id, to_json(v, "visitor")?])?;
        }
        for id in removed {
            tx.prepare_cached("DELETE FROM visitors WHERE id = ?1")?
                .execute([id])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn visitors(&self) -> Result<Vec<VisitorInfo>> {
        visitors(&self.conn)
    }

    /// Cached conversations, most recently updated first.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        conversations(&self.conn)
    }

    /// Up to `limit` messages of `conversation` that sort before `before`
    /// (the newest ones if `None`), returned oldest first. Page back by
    /// passing the first message's `order`.
    pub fn messages_page(
        &self,
        conversation: ConversationId,
        before: Option<MessageOrder>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>> {
        messages_page(&self.conn, conversation, before, limit)
    }

    pub fn message(&self, client_id: &MsgId) -> Result<Option<StoredMessage>> {
        message_by_client_id(&self.conn, client_id)
    }

    /// Visitor messages in `conversation` newer than its `last_read`.
    pub fn unread(&self, conversation: ConversationId) -> Result<u32> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation
                 WHERE c.id = ?1 AND m.from_visitor = 1
                   AND m.sort_key > c.last_read AND m.sort_key < ?2",
            )?
            .query_row(params![to_i64(conversation)?, QUEUED_SORT_BASE], |r| {
                r.get(0)
            })?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Everything in `conversation` so far has been read.
    pub fn mark_read(&mut self, conversation: ConversationId) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE conversations SET last_read = MAX(last_read, COALESCE(
                    (SELECT MAX(message) FROM messages WHERE conversation = ?1), 0))
                 WHERE id = ?1",
            )?
            .execute([to_i64(conversation)?])?;
        Ok(())
    }

    /// After a sign-out the server has handed this agent's chats on, so the
    /// cached copy is both stale and no longer this person's to read: drop
    /// the session, the cursor and everything it covered. Whoever opens the
    /// app next signs in first, and a new login gets a fresh snapshot. The
    /// pins, the account (to prefill the sign-in form), the device id and
    /// the command numbering stay; so does anything still in the outbox,
    /// which a sign-out never leaves behind but must never be lost either.
    pub fn forget_workspace(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM meta WHERE key IN ('agent', 'display_name', 'site', 'cursor')",
            [],
        )?;
        tx.execute(
            "DELETE FROM messages WHERE state != ?1",
            [DeliveryState::Queued.to_sql()],
        )?;
        tx.execute(
            "DELETE FROM conversations WHERE id NOT IN (SELECT conversation FROM messages)",
            [],
        )?;
        tx.execute("DELETE FROM visitors", [])?;
        tx.commit()?;
        Ok(())
    }

    /// Everything the UI needs to draw at once, read in one transaction so
    /// the parts agree with each other.
    pub fn cached_workspace(&self) -> Result<Workspace> {
        let tx = self.conn.unchecked_transaction()?;
        let conversations = conversations(&tx)?;
        let mut recent = HashMap::with_capacity(conversations.len());
        for c in &conversations {
            recent.insert(
                c.info.id,
                messages_page(&tx, c.info.id, None, RECENT_PER_CONVERSATION)?,
            );
        }
        let ws = Workspace {
            account: self.account()?,
            session: self.session()?,
            device_id: self.device_id,
            cursor: self.cursor()?,
            conversations,
            recent,
            visitors: visitors(&tx)?,
            unsent: self.unsent()?,
        };
        tx.finish()?;
        Ok(ws)
    }
}
