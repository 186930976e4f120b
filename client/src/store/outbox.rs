//! The outbox: actions written before their first send and deleted only
//! on the server's ack, resent in order after every reconnect.

use super::*;

/// One unacked command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: Seq,
    pub id: MsgId,
    pub action: Action,
    pub created_ms: i64,
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

pub(super) fn read_outbox(conn: &Connection, up_to: Option<Seq>) -> Result<Vec<OutboxEntry>> {
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
            // A command queued by a version 2 app before the upgrade has the
            // older layout (no attachment in a `Send`): still sent, not lost.
            let command = match ClientMsg::decode(&blob) {
                Ok(ClientMsg::Command(c)) => Some(c),
                Ok(_) => None,
                Err(e) => holdfast_protocol::agent::v2::decode_command(&blob)
                    .map_err(|_| corrupt(format!("row {seq}: {e}")))?,
            };
            match command {
                Some(c) if c.seq == seq && c.id == id => Ok(OutboxEntry {
                    seq,
                    id,
                    action: c.action,
                    created_ms,
                }),
                _ => Err(corrupt(format!("row {seq} holds another message"))),
            }
        })
        .collect()
}

/// [`Store::enqueue`]'s writes, inside the caller's transaction: an upload's
/// send is queued in the same transaction that marks the upload sent.
pub(super) fn enqueue_in(
    tx: &Connection,
    session: Option<Session>,
    seq: Seq,
    id: MsgId,
    action: &Action,
    command: Vec<u8>,
    now_ms: i64,
) -> Result<Option<StoredMessage>> {
    let seq_i = to_i64(seq)?;
    tx.prepare_cached("INSERT INTO outbox(seq, id, action, created_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![seq_i, &id.0[..], command, now_ms])?;
    if let Action::Send {
        conversation, body, ..
    } = action
    {
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
    message_by_client_id(tx, &id)
}

impl Store {
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
        let session = self.session()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored = enqueue_in(&tx, session, seq, id, action, command, now_ms)?;
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
                Action::Send { .. } => {
                    // A file's send settled: its pending upload goes in the
                    // same transaction, so no restart finds it half done.
                    tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                        .execute(params![&e.id.0[..]])?;
                    settle_local_message(&tx, &e.id, outcome.as_ref())?
                }
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
}
