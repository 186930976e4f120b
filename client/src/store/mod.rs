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
//!
//! - this file: [`Store`], opening, the meta values (device id, cursor,
//!   account, session), pins, and the workspace read in one go;
//! - `schema`: the migrations;
//! - `outbox`: [`OutboxEntry`], enqueue, resend and the ack;
//! - `messages`: the cached conversations and messages, applied from events
//!   and snapshots ([`StoredMessage`], [`DeliveryState`], [`EventEffect`]);
//! - `visitors`: the visitor list as last seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_protocol::agent::{
    Action, AgentId, AttachmentInfo, Author, ChatMessage, ClientMsg, Command, CommandResult,
    ConversationId, ConversationInfo, Event, MessageId, Outcome, Seq, SiteId, Snapshot,
    VisitorInfo,
};
use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::ids::MsgId;
use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior, params};

use crate::error::StoreError;

mod messages;
mod outbox;
mod schema;
mod uploads;
mod visitors;

use messages::*;
pub use messages::{ConversationSummary, DeliveryState, EventEffect, MessageOrder, StoredMessage};
pub use outbox::{AckedCommand, OutboxEntry};
use schema::*;
pub use uploads::UploadRow;
use visitors::*;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Messages still in the outbox have no server id yet, so they sort after
/// every server-committed message, in command order. Server message ids stay
/// far below this.
pub const QUEUED_SORT_BASE: i64 = 1 << 62;

/// How many recent messages per conversation [`Store::cached_workspace`]
/// returns.
pub const RECENT_PER_CONVERSATION: u32 = 50;

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
