//! Files being sent: one row per `send_file` until its message is acked.
//!
//! Why each crash point is safe (the row, the copy of the file under the
//! data dir, the server's upload and the outbox):
//!
//! - Killed before the row is written: `send_file` had not returned, so
//!   the user was not told it is queued; the copy is an orphan, deleted at
//!   the next start.
//! - Row written, no server upload yet (or the `UploadCreate` answer lost):
//!   the next start creates one. An upload created whose answer never
//!   arrived stays on the server, unfinished, until the server's sweep;
//!   nothing is sent from it.
//! - Server id stored: the next start asks `UploadOffset` and writes from
//!   the stored offset on; the server's offset is the truth, this row's
//!   `sent` only a progress hint.
//! - Upload complete, `UploadDone` not seen or the send not queued yet:
//!   the next `UploadOffset` answers `UploadDone` again, and the send is
//!   queued then.
//! - The send is queued in the same transaction that marks the row
//!   sending ([`Store::queue_upload_send`]), under the row's id, and only
//!   from a row still uploading: a restart cannot queue it twice, and a
//!   cancel cannot slip in between.
//! - The send's ack deletes the row in the transaction that removes the
//!   outbox row (`apply_ack`); the outbox's idempotent resend covers the
//!   rest, as for any message.

use super::*;
use crate::update::{PendingUpload, UploadState};

const UPLOADING: i64 = 0;
const SENDING: i64 = 1;
const FAILED: i64 = 2;

/// A file being sent, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: MsgId,
    pub conversation: ConversationId,
    pub name: String,
    pub body: String,
    /// The copy under the data dir.
    pub file: PathBuf,
    pub total: u64,
    /// The server's upload id, once created.
    pub server_id: Option<String>,
    pub sent: u64,
    pub state: UploadState,
}

impl UploadRow {
    pub fn pending(&self) -> PendingUpload {
        PendingUpload {
            id: self.id,
            conversation: self.conversation,
            name: self.name.clone(),
            body: self.body.clone(),
            sent: self.sent,
            total: self.total,
            state: self.state.clone(),
        }
    }
}

fn read_uploads(conn: &Connection) -> Result<Vec<UploadRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, conversation, name, body, file, total, server_id, sent, state, error
         FROM uploads ORDER BY created_ms, id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(
            |(id, conv, name, body, file, total, server_id, sent, state, error)| {
                Ok(UploadRow {
                    id: msg_id(&id, "upload id")?,
                    conversation: to_u64(conv, "upload conversation")?,
                    name,
                    body,
                    file: PathBuf::from(file),
                    total: to_u64(total, "upload length")?,
                    server_id,
                    sent: to_u64(sent, "upload offset")?,
                    state: match state {
                        SENDING => UploadState::Sending,
                        FAILED => UploadState::Failed(error.unwrap_or_default()),
                        _ => UploadState::Uploading,
                    },
                })
            },
        )
        .collect()
}

impl Store {
    /// Record a file to send; its copy must be on disk already.
    pub fn add_upload(&mut self, u: &UploadRow, now_ms: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO uploads (id, conversation, name, body, file, total, state, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
            )?
            .execute(params![
                &u.id.0[..],
                to_i64(u.conversation)?,
                u.name,
                u.body,
                u.file.to_string_lossy(),
                to_i64(u.total)?,
                now_ms
            ])?;
        Ok(())
    }

    /// Every file not sent yet, oldest first.
    pub fn uploads(&self) -> Result<Vec<UploadRow>> {
        read_uploads(&self.conn)
    }

    /// As [`Store::uploads`], for the UI.
    pub fn pending_uploads(&self) -> Result<Vec<PendingUpload>> {
        Ok(self.uploads()?.iter().map(UploadRow::pending).collect())
    }

    /// The server's id for upload `id`, or none to start over.
    pub fn set_upload_server_id(&mut self, id: &MsgId, server_id: Option<&str>) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE uploads SET server_id = ?2, sent = 0 WHERE id = ?1")?
            .execute(params![&id.0[..], server_id])?;
        Ok(())
    }

    /// Progress, for a UI after a restart; not relied on for resuming.
    pub fn set_upload_sent(&mut self, id: &MsgId, sent: u64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE uploads SET sent = ?2 WHERE id = ?1")?
            .execute(params![&id.0[..], to_i64(sent)?])?;
        Ok(())
    }

    pub fn fail_upload(&mut self, id: &MsgId, error: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE uploads SET state = 2, error = ?2 WHERE id = ?1 AND state = 0")?
            .execute(params![&id.0[..], error])?;
        Ok(())
    }

    /// Forget a file that is uploading or failed; `false` if its send is
    /// already queued (too late) or there is no such file.
    pub fn cancel_upload(&mut self, id: &MsgId) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM uploads WHERE id = ?1 AND state != 1")?
            .execute(params![&id.0[..]])?;
        Ok(n > 0)
    }

    /// Queue the send that carries a completed upload, under the upload's
    /// id, and mark it sending, in one transaction; `None` (nothing queued)
    /// if the upload is no longer uploading (cancelled, failed, or queued
    /// already).
    pub fn queue_upload_send(
        &mut self,
        seq: Seq,
        id: MsgId,
        action: &Action,
        info: &AttachmentInfo,
        now_ms: i64,
    ) -> Result<Option<Option<StoredMessage>>> {
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
        let n = tx
            .prepare_cached(
                "UPDATE uploads SET state = 1, sent = total WHERE id = ?1 AND state = ?2",
            )?
            .execute(params![&id.0[..], UPLOADING])?;
        if n == 0 {
            return Ok(None);
        }
        super::outbox::enqueue_in(&tx, session, seq, id, action, command, now_ms)?;
        // The queued message shows its file at once, not only after the echo.
        tx.prepare_cached("UPDATE messages SET attachment = ?2 WHERE client_id = ?1")?
            .execute(params![&id.0[..], to_json(info, "message attachment")?])?;
        let stored = message_by_client_id(&tx, &id)?;
        tx.commit()?;
        Ok(Some(stored))
    }
}
