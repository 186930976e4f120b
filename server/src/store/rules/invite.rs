//! `Action::Invite`: an agent starts a chat with a visitor on the site (or
//! joins the visitor's open one, if nobody else is serving it) by writing
//! the first line.

use holdfast_protocol::agent::{ConversationState, Outcome};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;

use super::{Content, Rules, agent_author, check_body, done, rejected};
use crate::store::StoreError;
use crate::store::reads::AgentRow;
use crate::store::sql::args;
use crate::store::writer::AgentActor;

impl Rules<'_> {
    pub(super) fn invite(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        visitor: &str,
        body: &str,
        client_id: MsgId,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        if let Some(bad) = check_body(body) {
            return Ok(bad);
        }
        let site: Option<i64> = self
            .conn
            .query_opt(
                "SELECT site_id FROM visitors WHERE id = ?1",
                &args![visitor],
            )?
            .map(|r| r.get(0))
            .transpose()?;
        // Another site's visitor gets the same answer as a missing one.
        if site.and_then(|s| u64::try_from(s).ok()) != Some(actor.site) {
            return Ok(rejected(ErrorCode::NotFound, "no such visitor"));
        }
        let c = match self.open_conversation_locked(visitor)? {
            Some(c) if c.state == ConversationState::Active && c.assigned != Some(actor.id) => {
                return Ok(rejected(
                    ErrorCode::Conflict,
                    format!(
                        "{} is already chatting with this visitor",
                        c.assigned_name.as_deref().unwrap_or("another agent")
                    ),
                ));
            }
            Some(c) if c.state == ConversationState::Active => c,
            Some(c) => {
                let c = self.set_state(&c, ConversationState::Active, Some(actor.id), now)?;
                self.backfill(&c, actor.id, now)?;
                self.joined(&c, &me.display_name, now)?;
                c
            }
            None => {
                let id = self.create_conversation(
                    actor.site,
                    visitor,
                    ConversationState::Active,
                    Some(actor.id),
                    None,
                    None,
                    now,
                )?;
                let c = self.announce(id, now)?;
                self.team_effect(actor.id)?;
                self.joined(&c, &me.display_name, now)?;
                c
            }
        };
        let m = self.post(
            &c,
            agent_author(actor, me),
            Content::text(body),
            client_id,
            now,
            false,
        )?;
        Ok(done(Some(c.id), Some(m), now))
    }
}
