//! `Action::Transfer`: the owner hands its chat on, or a supervisor moves
//! (or assigns) any chat of the site. Every open chat has exactly one owner
//! or waits in the queue. This runs on the writer thread inside an op's
//! savepoint, like every other rule, so two transfers (or a transfer and a
//! release) racing for one chat are applied one after the other and the
//! second sees what the first did.

use holdfast_protocol::agent::{AgentId, ConversationId, ConversationState, Outcome, Presence};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;

use super::{Rules, check_body, rejected};
use crate::store::StoreError;
use crate::store::reads::{self, AgentRow};
use crate::store::writer::AgentActor;

impl Rules<'_> {
    /// `Action::Transfer`: the owner hands its chat on, or a supervisor
    /// moves (or assigns) any chat of the site.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transfer(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        conversation: ConversationId,
        from: Option<AgentId>,
        to: AgentId,
        note: Option<&str>,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        if let Some(n) = note
            && let Some(bad) = check_body(n)
        {
            return Ok(bad);
        }
        let c = match self.conv_for(actor, conversation)? {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        if c.state == ConversationState::Closed {
            return Ok(rejected(ErrorCode::Conflict, "conversation is closed"));
        }
        let owns = c.state == ConversationState::Active && c.assigned == Some(actor.id);
        if !owns && !me.role.oversees() {
            return Ok(rejected(
                ErrorCode::Forbidden,
                "only the agent serving a chat, or a supervisor, can transfer it",
            ));
        }
        // Compare-and-set on the owner the sender saw: of two transfers
        // racing for one chat, the second finds it moved and is refused.
        let current = if c.state == ConversationState::Active {
            c.assigned
        } else {
            None
        };
        if current != from {
            return Ok(rejected(
                ErrorCode::Conflict,
                match c.assigned_name.as_deref().filter(|_| current.is_some()) {
                    Some(n) => format!("the chat has moved on: {n} is serving it now"),
                    None => "the chat has moved on: it is waiting in the queue now".into(),
                },
            ));
        }
        if current == Some(to) {
            return Ok(rejected(
                ErrorCode::Conflict,
                "that agent is already serving this chat",
            ));
        }
        let target = match reads::agent_by_id(self.conn, to)? {
            Some(t) if t.site == actor.site => t,
            _ => return Ok(rejected(ErrorCode::NotFound, format!("no agent {to}"))),
        };
        if let Some(why) = self.cannot_take(&target)? {
            return Ok(rejected(ErrorCode::Conflict, why));
        }
        // The lines go first, so the agent handing over sees them too; the
        // new owner gets them with the rest of the history.
        let from_name = match current {
            Some(a) => reads::agent_by_id(self.conn, a)?.map(|r| r.display_name),
            None => None,
        };
        let line = Notice::Transferred {
            from: from_name,
            to: target.display_name.clone(),
            by: me.display_name.clone(),
        };
        let message = self.system_line(&c, &line, now)?;
        if let Some(text) = note {
            let note = Notice::Note {
                author: me.display_name.clone(),
                text: text.to_owned(),
            };
            self.system_line(&c, &note, now)?;
        }
        let c = self.set_state(&c, ConversationState::Active, Some(to), now)?;
        self.backfill(&c, to, now)?;
        Ok(Outcome::Done {
            conversation: Some(c.id),
            message: Some(message),
            at_ms: now,
        })
    }

    /// Why `target` cannot take a chat now, in words for the sender.
    fn cannot_take(&self, target: &AgentRow) -> Result<Option<String>, StoreError> {
        let name = &target.display_name;
        if target.disabled {
            return Ok(Some(format!("{name}'s account is disabled")));
        }
        match self.presence_of(target.id) {
            Presence::Online => {}
            Presence::Away => return Ok(Some(format!("{name} is away"))),
            Presence::Offline => return Ok(Some(format!("{name} is offline"))),
        }
        self.lock_row("agents", target.id)?;
        let load = reads::agent_load(self.conn, target.id)?;
        if load >= target.capacity {
            return Ok(Some(format!(
                "{name} is at capacity ({load} of {} chats)",
                target.capacity
            )));
        }
        Ok(None)
    }
}
