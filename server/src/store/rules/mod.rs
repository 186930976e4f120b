//! The chat rules: what each op does to the database, inside the op's
//! savepoint on the writer thread. One file per kind of operation, in the
//! manner of mini-redis's `cmd/`: the file reads its op's fields, checks
//! them, applies the change and says what to tell whom.
//!
//! Agent commands (`Op::AgentCommand`, dispatched in [`agent_command`]):
//! - [`agent_send`]: `Action::Send`, a message in a chat one serves.
//! - [`invite`]: `Action::Invite`, start (or join) a chat with a visitor.
//! - [`accept`]: `Action::Accept`, take a waiting chat or a left message.
//! - [`close`]: `Action::Close`, end a chat.
//! - [`transfer`]: `Action::Transfer`, hand a chat to another agent.
//! - [`presence`]: `Action::SetPresence`, online or away.
//! - [`canned`]: `Action::SaveCanned` and `Action::DeleteCanned`, the
//!   site's and each agent's canned replies.
//! - [`invite_rules`]: `Action::SaveInviteRule`, `DeleteInviteRule` and
//!   `EnableInviteRule`, an admin's invitation rules.
//!
//! Other ops:
//! - [`agent_login`]: `Op::AgentLogin`, register a device.
//! - [`release_chats`]: `Op::ReleaseChats`, an agent signed out, stayed
//!   offline or was disabled: its chats go back to the queue.
//! - [`assign`]: `Op::AssignQueued`, and auto-assignment for every rule
//!   that frees an agent.
//! - [`visitor_hello`]: `Op::VisitorHello`, create or refresh a visitor.
//! - [`visitor_send`]: `Op::VisitorSend`, a visitor's message or a left
//!   message.
//! - [`end_chat`]: `Op::VisitorEndChat`, the visitor ends the chat.
//! - [`page_view`]: `Op::PageView`, one page of the trail.
//! - [`identify`]: `Op::Identify`, who the visitor is.
//! - [`delivered`]: `Op::Delivered`, the visitor received messages.
//! - [`invitation`]: `Op::FireInvitation` and `Op::InvitationSeen`, and
//!   accepting an invitation when the reply opens a chat.
//!
//! Shared by the rules: [`events`] (the two logs and who reads them),
//! [`conversation`] (open, change state, post, catch up), and here the
//! per-op state, the idempotency check, and the small checks every rule
//! uses.

mod accept;
mod agent_command;
mod agent_login;
mod agent_send;
mod assign;
mod block;
mod canned;
mod close;
mod conversation;
mod delivered;
mod end_chat;
mod events;

pub(in crate::store) use events::{PendingEvent, finish_logs};
mod identify;
mod invitation;
mod invite;
mod invite_rules;
mod note;
mod page_view;
mod presence;
mod release_chats;
mod tag;
mod transfer;
mod visitor_hello;
mod visitor_send;
pub(in crate::store) use visitor_send::VisitorText;

use std::collections::HashMap;

use holdfast_protocol::agent::{
    AgentId, AttachmentInfo, Author, ConversationId, MessageId, Outcome, Presence, Seq,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;

use super::StoreError;
use super::effect::Effect;
use super::live::Availability;
use super::reads;
use super::sql::{Db, Dialect, args};
use super::writer::AgentActor;

/// The longest chat message body, in bytes.
pub const MAX_BODY: usize = 8 * 1024;

/// What ops changed that is not committed yet: one op's, kept apart until
/// its savepoint is released, then the batch's, which the commit makes real
/// (and a failed commit drops).
#[derive(Default)]
pub(in crate::store) struct Staged {
    /// How many events each log (keyed as [`reads::agent_key`] and
    /// [`reads::visitor_key`]) gains. Until the batch ends, an event's seq
    /// is its place among these (1, 2, …); [`finish_logs`] adds the log's
    /// head to it.
    pub(in crate::store) counts: HashMap<String, Seq>,
    /// The events themselves, written by [`finish_logs`] once their seqs
    /// are known.
    pub(in crate::store) events: Vec<PendingEvent>,
    /// Presence set by `Action::SetPresence` or a sign-out. The hub learns
    /// it from the committed [`Effect::Presence`]; until then, later ops of
    /// the batch see it here, so assignment right after "online" already
    /// counts the agent.
    pub(in crate::store) presence: HashMap<AgentId, Presence>,
    /// What to tell the hub after the commit.
    pub(in crate::store) effects: Vec<Effect>,
}

impl Staged {
    /// A released op's changes join the batch's.
    pub(in crate::store) fn absorb(&mut self, op: Staged) {
        self.counts.extend(op.counts);
        self.events.extend(op.events);
        self.presence.extend(op.presence);
        self.effects.extend(op.effects);
    }
}

/// One op being applied, inside its savepoint: the connection, the live
/// side's view of who is available, and what this op and the batch so far
/// have changed.
pub(in crate::store) struct Rules<'a> {
    conn: &'a dyn Db,
    live: &'a dyn Availability,
    op: &'a mut Staged,
    batch: &'a Staged,
    /// Log heads as of the last commit.
    committed_heads: &'a HashMap<String, Seq>,
    /// [`WriterConfig::trail_keep`](super::WriterConfig::trail_keep).
    trail_keep: u32,
}

impl<'a> Rules<'a> {
    pub(in crate::store) fn new(
        conn: &'a dyn Db,
        live: &'a dyn Availability,
        op: &'a mut Staged,
        batch: &'a Staged,
        committed_heads: &'a HashMap<String, Seq>,
        trail_keep: u32,
    ) -> Self {
        Self {
            conn,
            live,
            op,
            batch,
            committed_heads,
            trail_keep,
        }
    }
}

/// What a message says: words, a file, or both.
#[derive(Clone, Copy)]
pub(super) struct Content<'a> {
    pub body: &'a str,
    pub attachment: Option<&'a AttachmentInfo>,
}

impl<'a> Content<'a> {
    pub(super) fn text(body: &'a str) -> Self {
        Self {
            body,
            attachment: None,
        }
    }

    /// A file alone needs no words; words, when there are any, keep their
    /// limits.
    pub(super) fn check(&self) -> Option<Outcome> {
        if self.attachment.is_some() && self.body.is_empty() {
            return None;
        }
        check_body(self.body)
    }
}

pub(super) fn rejected(code: ErrorCode, message: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        code,
        message: message.into(),
    }
}

pub(super) fn check_body(body: &str) -> Option<Outcome> {
    if body.trim().is_empty() {
        return Some(rejected(ErrorCode::BadRequest, "message is empty"));
    }
    if body.len() > MAX_BODY {
        return Some(rejected(
            ErrorCode::TooLarge,
            format!("message is {} bytes; the limit is {MAX_BODY}", body.len()),
        ));
    }
    None
}

/// An action applied.
fn done(conversation: Option<ConversationId>, message: Option<MessageId>, at_ms: i64) -> Outcome {
    Outcome::Done {
        conversation,
        message,
        at_ms,
    }
}

/// How an agent's lines are signed: with the name as stored now.
fn agent_author(actor: &AgentActor, me: &reads::AgentRow) -> Author {
    Author::Agent {
        agent: actor.id,
        name: me.display_name.clone(),
    }
}

fn encode_outcome(o: &Outcome) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(o, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_outcome(b: &[u8]) -> Result<Outcome, StoreError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(o, _)| o)
        .map_err(|e| StoreError::Corrupt(format!("stored outcome: {e}")))
}

impl Rules<'_> {
    /// Lock a row (`id` of `table`) until the batch commits, before reading
    /// it to decide on it. With one writer (SQLite) every op already runs
    /// alone, so this does nothing there. With several nodes on one
    /// PostgreSQL database it makes a decision and its write one step: a
    /// second node's op on the same chat, agent or visitor waits here for
    /// the first one's COMMIT and then reads what it did (two accepts of
    /// one waiting chat: one wins, the other is told who took it).
    pub(super) fn lock_row(
        &self,
        table: &str,
        id: impl Into<super::sql::Value>,
    ) -> Result<(), StoreError> {
        if self.conn.dialect() == Dialect::Postgres {
            self.conn.query_rows(
                &format!("SELECT 1 FROM {table} WHERE id = ?1 FOR UPDATE"),
                &[id.into()],
            )?;
        }
        Ok(())
    }

    /// The visitor's open conversation, with the visitor's row and the
    /// conversation's locked as [`Rules::lock_row`] does: one visitor's
    /// ops through two nodes then apply one after the other (and cannot
    /// open two chats).
    pub(super) fn open_conversation_locked(
        &self,
        visitor: &str,
    ) -> Result<Option<holdfast_protocol::agent::ConversationInfo>, StoreError> {
        if self.conn.dialect() == Dialect::Sqlite {
            return reads::open_conversation(self.conn, visitor);
        }
        self.lock_row("visitors", visitor)?;
        match reads::open_conversation(self.conn, visitor)? {
            Some(c) => {
                self.lock_row("conversations", c.id)?;
                // Read again under the lock: it may have changed meanwhile.
                reads::open_conversation(self.conn, visitor)
            }
            None => Ok(None),
        }
    }

    /// `FOR UPDATE SKIP LOCKED` where other writers may hold rows: a queue
    /// read that takes only what no other node is handing out right now.
    pub(super) fn skip_locked(&self) -> &'static str {
        match self.conn.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The idempotency check, the one place both channels ask "was this
    /// action id already applied?": a new id runs `apply` and records its
    /// outcome in the same savepoint; the actor's resend gets the recorded
    /// outcome and applies nothing; an id someone else used is refused.
    /// `actor_key` is the actor's log key; `seq` is the agent command's
    /// sequence number (0 for visitors, who have none).
    pub(super) fn once(
        &mut self,
        id: &MsgId,
        actor_key: &str,
        seq: Seq,
        apply: impl FnOnce(&mut Self) -> Result<Outcome, StoreError>,
    ) -> Result<Outcome, StoreError> {
        let prior: Option<(String, Vec<u8>)> = self
            .conn
            .query_opt(
                "SELECT actor, outcome FROM actions WHERE client_id = ?1",
                &args![&id.0[..]],
            )?
            .map(|r| Ok::<_, StoreError>((r.get(0)?, r.get(1)?)))
            .transpose()?;
        match prior {
            Some((who, bytes)) if who == actor_key => return decode_outcome(&bytes),
            Some(_) => {
                return Ok(rejected(
                    ErrorCode::Conflict,
                    "this action id was already used by someone else",
                ));
            }
            None => {}
        }
        let outcome = apply(self)?;
        self.conn.execute(
            "INSERT INTO actions (client_id, actor, seq, outcome) VALUES (?1, ?2, ?3, ?4)",
            &args![&id.0[..], actor_key, seq, encode_outcome(&outcome)?],
        )?;
        Ok(outcome)
    }
}
