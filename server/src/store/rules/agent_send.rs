//! `Action::Send`: an agent's message in a chat it is serving. Only the
//! owner writes to the visitor; everyone else is told who is serving it.

use holdfast_protocol::agent::{ConversationId, ConversationState, Outcome};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;

use super::{Content, Rules, agent_author, done, rejected};
use crate::store::StoreError;
use crate::store::reads::AgentRow;
use crate::store::writer::AgentActor;

impl Rules<'_> {
    pub(super) fn agent_send(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        conversation: ConversationId,
        content: Content<'_>,
        client_id: MsgId,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        if let Some(bad) = content.check() {
            return Ok(bad);
        }
        let c = match self.conv_for(actor, conversation)? {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        if c.state == ConversationState::Closed {
            return Ok(rejected(ErrorCode::Conflict, "conversation is closed"));
        }
        if c.state != ConversationState::Active || c.assigned != Some(actor.id) {
            let who = c.assigned_name.as_deref().filter(|_| c.assigned.is_some());
            return Ok(rejected(
                ErrorCode::Conflict,
                match who {
                    Some(n) => format!("{n} is serving this conversation, not you"),
                    None => "conversation is not assigned to you; accept it first".into(),
                },
            ));
        }
        let m = self.post(&c, agent_author(actor, me), content, client_id, now, false)?;
        Ok(done(Some(c.id), Some(m), now))
    }
}
