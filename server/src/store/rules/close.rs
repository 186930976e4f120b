//! `Action::Close`: the serving agent (or a supervisor) ends a chat. The
//! agent's freed capacity goes straight to the queue.

use holdfast_protocol::agent::{ConversationId, ConversationState, Outcome};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;

use super::{Rules, done, rejected};
use crate::store::StoreError;
use crate::store::reads::AgentRow;
use crate::store::writer::AgentActor;

impl Rules<'_> {
    pub(super) fn close(
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
        match c.state {
            ConversationState::Closed => Ok(done(Some(c.id), None, now)),
            ConversationState::Active if c.assigned != Some(actor.id) && !me.role.oversees() => {
                Ok(rejected(
                    ErrorCode::Forbidden,
                    "conversation is assigned to another agent",
                ))
            }
            _ => {
                let line = Notice::ClosedByAgent {
                    agent: me.display_name.clone(),
                };
                self.system_line(&c, &line, now)?;
                self.set_state(&c, ConversationState::Closed, c.assigned, now)?;
                self.assign_queued(actor.site, None)?;
                Ok(done(Some(c.id), None, now))
            }
        }
    }
}
