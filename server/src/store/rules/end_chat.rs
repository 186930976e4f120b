//! `Op::VisitorEndChat`: the visitor ends the open chat, which frees its
//! agent for the next one in the queue.

use holdfast_protocol::agent::{ConversationState, Outcome};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::Notice;

use super::{Rules, rejected};
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    pub(in crate::store) fn visitor_end_chat(
        &mut self,
        visitor: &str,
        _id: MsgId,
    ) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let Some(c) = self.open_conversation_locked(visitor)? else {
            return Ok(rejected(
                ErrorCode::NotFound,
                "there is no open chat to end",
            ));
        };
        let m = self.system_line(&c, &Notice::ClosedByVisitor, now)?;
        self.set_state(&c, ConversationState::Closed, c.assigned, now)?;
        self.assign_queued(c.site, None)?;
        Ok(Outcome::Done {
            conversation: Some(c.id),
            message: Some(m),
            at_ms: now,
        })
    }
}
