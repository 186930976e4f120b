//! `Action::Block` and `Action::Unblock`: an agent shuts a visitor out of
//! the site's chat (by visitor id, and optionally by the address of its
//! latest hello), and lets it back in. A block ends the visitor's open
//! chat, so it waits in no queue and no agent's list, and drops its live
//! connections here; its hello and its messages are refused from then on,
//! on every node (PROTOCOL.md 10.16).

use holdfast_protocol::agent::{ConversationState, Outcome};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;

use super::{Rules, done, rejected};
use crate::store::StoreError;
use crate::store::effect::{Effect, VisitorChange};
use crate::store::reads::AgentRow;
use crate::store::sql::args;
use crate::store::writer::AgentActor;

/// The longest reason kept.
const MAX_REASON: usize = 500;

impl Rules<'_> {
    /// The visitor's address if it is of the actor's site; `Err` answers
    /// a visitor of another site as a missing one.
    fn site_visitor(
        &mut self,
        actor: &AgentActor,
        visitor: &str,
    ) -> Result<Result<Option<String>, Outcome>, StoreError> {
        let row = self.conn.query_opt(
            "SELECT site_id, last_ip FROM visitors WHERE id = ?1",
            &args![visitor],
        )?;
        let Some(row) = row else {
            return Ok(Err(rejected(ErrorCode::NotFound, "no such visitor")));
        };
        let site: i64 = row.get(0)?;
        if u64::try_from(site).ok() != Some(actor.site) {
            return Ok(Err(rejected(ErrorCode::NotFound, "no such visitor")));
        }
        Ok(Ok(row.get(1)?))
    }

    pub(super) fn block(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        visitor: &str,
        by_address: bool,
        reason: &str,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Ok(rejected(
                ErrorCode::BadRequest,
                "say why the visitor is blocked",
            ));
        }
        if reason.chars().count() > MAX_REASON {
            return Ok(rejected(
                ErrorCode::TooLarge,
                format!("the reason is longer than {MAX_REASON} characters"),
            ));
        }
        let ip = match self.site_visitor(actor, visitor)? {
            Ok(ip) => ip,
            Err(o) => return Ok(o),
        };
        let ip = if by_address { ip } else { None };
        self.conn.execute(
            "INSERT INTO blocks (site_id, visitor_id, ip, reason, by_agent, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &args![actor.site, visitor, ip, reason, actor.id, now],
        )?;
        let mut closed = None;
        if let Some(c) = self.open_conversation_locked(visitor)?
            && c.state != ConversationState::Closed
        {
            let line = Notice::ClosedByAgent {
                agent: me.display_name.clone(),
            };
            self.system_line(&c, &line, now)?;
            self.set_state(&c, ConversationState::Closed, c.assigned, now)?;
            if c.assigned.is_some() {
                self.assign_queued(actor.site, None)?;
            }
            closed = Some(c.id);
        }
        self.op.effects.push(Effect::VisitorChanged {
            visitor: visitor.to_string(),
            change: VisitorChange::Blocked,
        });
        Ok(done(closed, None, now))
    }

    pub(super) fn unblock(
        &mut self,
        actor: &AgentActor,
        visitor: &str,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        if let Err(o) = self.site_visitor(actor, visitor)? {
            return Ok(o);
        }
        self.conn.execute(
            "UPDATE blocks SET lifted_ms = ?3 WHERE visitor_id = ?1 AND site_id = ?2 \
             AND lifted_ms IS NULL",
            &args![visitor, actor.site, now],
        )?;
        Ok(done(None, None, now))
    }
}
