//! The cached conversations and messages: applied from events and
//! snapshots together with the cursor, and where the agent's own queued
//! messages sit until the server commits them.

use super::*;

pub(super) const MESSAGE_COLUMNS: &str =
    "sort_key, conversation, message, client_id, author, body, at_ms, state, attachment";

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
    pub(super) fn to_sql(self) -> i64 {
        match self {
            DeliveryState::Queued => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Failed => 3,
        }
    }

    pub(super) fn from_sql(v: i64) -> Option<Self> {
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
    /// The file the message carries (protocol version 3).
    pub attachment: Option<AttachmentInfo>,
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

/// One `messages` row as SQLite returns it.
pub(super) struct RawMessage {
    sort_key: i64,
    conversation: i64,
    message: Option<i64>,
    client_id: Vec<u8>,
    author: String,
    body: String,
    at_ms: i64,
    state: i64,
    attachment: Option<String>,
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
            attachment: r.get(8)?,
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
        let attachment = self
            .attachment
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                what: "message attachment",
                detail: e.to_string(),
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
            attachment,
        })
    }
}

/// Keep the rows that decode; log the others (see the module docs).
pub(super) fn decode_cached(raw: Vec<RawMessage>) -> Vec<StoredMessage> {
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

pub(super) fn message_by_client_id(conn: &Connection, id: &MsgId) -> Result<Option<StoredMessage>> {
    let raw = conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE client_id = ?1"
        ))?
        .query_row([&id.0[..]], RawMessage::from_row)
        .optional()?;
    raw.map(RawMessage::decode).transpose()
}

pub(super) fn messages_page(
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

pub(super) fn upsert_conversation(conn: &Connection, info: &ConversationInfo) -> Result<()> {
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
pub(super) fn upsert_message(conn: &Connection, m: &ChatMessage) -> Result<EventEffect> {
    let message = to_i64(m.message)?;
    let conversation = to_i64(m.conversation)?;
    let author = to_json(&m.author, "message author")?;
    let from_visitor = matches!(m.author, Author::Visitor { .. });
    let attachment = m
        .attachment
        .as_ref()
        .map(|a| to_json(a, "message attachment"))
        .transpose()?;
    let existing: Option<i64> = conn
        .prepare_cached("SELECT local FROM messages WHERE client_id = ?1")?
        .query_row([&m.client_id.0[..]], |r| r.get(0))
        .optional()?;
    let new = match existing {
        Some(local) => {
            conn.prepare_cached(
                "UPDATE OR IGNORE messages SET
                    message = ?2, sort_key = ?2, conversation = ?3, author = ?4,
                    from_visitor = ?5, body = ?6, at_ms = ?7, attachment = ?10,
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
                attachment,
            ])?;
            false
        }
        None => {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO messages
                        (sort_key, conversation, message, client_id, author, from_visitor,
                         body, at_ms, state, attachment)
                     VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6, ?7,
                        CASE WHEN ?5 = 0 AND ?1 <= COALESCE((SELECT delivered_up_to
                            FROM conversations WHERE id = ?2), 0) THEN ?8 ELSE ?9 END, ?10)",
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
                    attachment,
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

pub(super) fn mark_delivered(
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
pub(super) fn settle_local_message(
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

pub(super) fn conversations(conn: &Connection) -> Result<Vec<ConversationSummary>> {
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
}
