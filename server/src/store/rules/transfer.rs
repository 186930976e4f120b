//! `Action::Transfer`: the owner hands its chat on, or a supervisor moves
//! (or assigns) any chat of the site. Every open chat has exactly one owner
//! or waits in the queue. This runs on the writer thread inside an op's
//! savepoint, like every other rule, so two transfers (or a transfer and a
//! release) racing for one chat are applied one after the other and the
//! second sees what the first did.

use holdfast_protocol::agent::{
    AgentId, ConversationId, ConversationInfo, ConversationState, Outcome, Presence,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;

use super::{Rules, check_body, rejected};
use crate::store::StoreError;
use crate::store::reads::{self, AgentRow};
use crate::store::sql::args;
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
        let current = match owner_as_seen(&c, actor, me, from, "transfer it") {
            Ok(current) => current,
            Err(o) => return Ok(o),
        };
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

/// Who serves `c` now (`None` while it waits), once `me` may move it (its
/// owner, or a supervisor) and it is still where the sender saw it: a
/// compare-and-set on `from`, so of two moves racing for one chat the
/// second finds it moved and is refused. `what` ends the refusal to
/// anyone else ("…can transfer it").
fn owner_as_seen(
    c: &ConversationInfo,
    actor: &AgentActor,
    me: &AgentRow,
    from: Option<AgentId>,
    what: &str,
) -> Result<Option<AgentId>, Outcome> {
    let owns = c.state == ConversationState::Active && c.assigned == Some(actor.id);
    if !owns && !me.role.oversees() {
        return Err(rejected(
            ErrorCode::Forbidden,
            format!("only the agent serving a chat, or a supervisor, can {what}"),
        ));
    }
    let current = if c.state == ConversationState::Active {
        c.assigned
    } else {
        None
    };
    if current != from {
        return Err(rejected(
            ErrorCode::Conflict,
            match c.assigned_name.as_deref().filter(|_| current.is_some()) {
                Some(n) => format!("the chat has moved on: {n} is serving it now"),
                None => "the chat has moved on: it is waiting in the queue now".into(),
            },
        ));
    }
    Ok(current)
}

impl Rules<'_> {
    /// `Action::TransferToGroup`: the chat leaves its owner (or, moved by
    /// a supervisor, the queue it waits in) for the site group `group`: an
    /// available agent of the group takes it at once, or it waits in the
    /// group's queue, never stranded (10.23).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transfer_to_group(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        conversation: ConversationId,
        from: Option<AgentId>,
        group: &str,
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
        if matches!(
            c.state,
            ConversationState::Closed | ConversationState::LeftMessage
        ) {
            return Ok(rejected(
                ErrorCode::Conflict,
                "only an open chat moves to a group",
            ));
        }
        let current = match owner_as_seen(&c, actor, me, from, "move it to a group") {
            Ok(current) => current,
            Err(o) => return Ok(o),
        };
        let Some(target) = crate::groups::by_key(self.conn, actor.site, group)? else {
            return Ok(rejected(ErrorCode::NotFound, format!("no group {group:?}")));
        };
        if c.group.as_deref() == Some(target.key.as_str()) && current.is_none() {
            return Ok(rejected(
                ErrorCode::Conflict,
                format!("the chat already waits for {}", target.name),
            ));
        }
        let from_name = match current {
            Some(a) => reads::agent_by_id(self.conn, a)?.map(|r| r.display_name),
            None => None,
        };
        // The visitor sees the same line as for a transfer to an agent,
        // naming the group.
        let line = Notice::Transferred {
            from: from_name,
            to: target.name.clone(),
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
        self.conn.execute(
            "UPDATE conversations SET group_key = ?2 WHERE id = ?1",
            &args![c.id, &target.key],
        )?;
        let c = reads::conversation(self.conn, c.id)?
            .ok_or_else(|| StoreError::Corrupt(format!("conversation {} vanished", c.id)))?;
        // Back in the queue first (its place now counts in the group's),
        // then to whoever of the group is free: never back to the agent
        // who handed it on.
        let was_waiting = c.state == ConversationState::Queued;
        let c = self.set_state(&c, ConversationState::Queued, None, now)?;
        if was_waiting {
            // Still waiting, now in another queue: its wait there counts
            // from now, from the place it has in it.
            self.entered_queue(c.site, c.id, now)?;
        }
        if let Some(agent) = self.pick_agent(actor.site, Some(&target.key), current)? {
            let c = self.set_state(&c, ConversationState::Active, Some(agent), now)?;
            self.backfill(&c, agent, now)?;
            if let Some(name) = c.assigned_name.clone() {
                self.joined(&c, &name, now)?;
            }
        }
        // The agent who handed it on has room now for another chat that
        // waits, but not for this one back: it waits for the group.
        if let Some(owner) = current {
            self.assign_queued_but(actor.site, None, Some((c.id, owner)))?;
        }
        Ok(Outcome::Done {
            conversation: Some(c.id),
            message: Some(message),
            at_ms: now,
        })
    }
}
