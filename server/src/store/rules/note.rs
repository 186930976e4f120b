//! `Action::Note`: an agent's internal note in a conversation. Stored as
//! an internal message with `Author::Note`, sent to the agents who see the
//! chat, kept in history, and never written to the visitor's log or put
//! in a visitor's snapshot (PROTOCOL.md 10.17).

use holdfast_protocol::agent::{
    Author, ConversationId, ConversationInfo, ConversationState, Outcome,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;

use super::{Content, Rules, done, rejected};
use crate::store::StoreError;
use crate::store::reads::AgentRow;
use crate::store::writer::AgentActor;

/// Who reads a chat may note in it and tag it: its agent, a supervisor,
/// and anyone while it waits or after it ended. `None` when `actor` may.
pub(super) fn may_annotate(
    c: &ConversationInfo,
    actor: &AgentActor,
    me: &AgentRow,
) -> Option<Outcome> {
    (c.state == ConversationState::Active && c.assigned != Some(actor.id) && !me.role.oversees())
        .then(|| {
            rejected(
                ErrorCode::Forbidden,
                "another agent is serving this conversation",
            )
        })
}

impl Rules<'_> {
    pub(super) fn note(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        conversation: ConversationId,
        body: &str,
        client_id: MsgId,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let content = Content::text(body);
        if let Some(bad) = content.check() {
            return Ok(bad);
        }
        let c = match self.conv_for(actor, conversation)? {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        if let Some(refused) = may_annotate(&c, actor, me) {
            return Ok(refused);
        }
        let author = Author::Note {
            agent: actor.id,
            name: me.display_name.clone(),
        };
        let m = self.post(&c, author, content, client_id, now, true)?;
        Ok(done(Some(c.id), Some(m), now))
    }
}
