//! `Action::Accept`: an agent takes a waiting chat or a left message.
//! Accepting a chat one already serves is a no-op, so a resend after a
//! lost ack is harmless; a chat someone else took is refused with who.

use holdfast_protocol::agent::{ConversationId, ConversationState, Outcome};
use holdfast_protocol::error::ErrorCode;

use super::{Rules, done, rejected};
use crate::store::StoreError;
use crate::store::reads::{self, AgentRow};
use crate::store::writer::AgentActor;

impl Rules<'_> {
    pub(super) fn accept(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        conversation: ConversationId,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let c = match self.conv_for(actor, conversation)? {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        // A waiting chat for a group is its members' to take (and the
        // supervisors', who see every queue): routing is the server's, not
        // only what each app chooses to show.
        if c.state == ConversationState::Queued
            && let Some(g) = &c.group
            && !me.role.oversees()
            && !reads::in_group(self.conn, actor.id, g)?
        {
            return Ok(rejected(
                ErrorCode::Forbidden,
                format!("this chat waits for the {g} group, which you are not in"),
            ));
        }
        match c.state {
            ConversationState::Queued | ConversationState::LeftMessage => {
                let c = self.set_state(&c, ConversationState::Active, Some(actor.id), now)?;
                self.backfill(&c, actor.id, now)?;
                self.joined(&c, &me.display_name, now)?;
                Ok(done(Some(c.id), None, now))
            }
            ConversationState::Active if c.assigned == Some(actor.id) => {
                Ok(done(Some(c.id), None, now))
            }
            ConversationState::Active => Ok(rejected(
                ErrorCode::Conflict,
                format!(
                    "{} already took it",
                    c.assigned_name.as_deref().unwrap_or("another agent")
                ),
            )),
            ConversationState::Closed => {
                Ok(rejected(ErrorCode::Conflict, "conversation is closed"))
            }
        }
    }
}
