//! Appending to the two event logs, and who reads which.
//!
//! Every rule that tells someone something goes through here: the event is
//! written with the next sequence number of its recipient's log, and the
//! matching [`Effect`] is kept for the hub, to be routed only once the batch
//! is committed.

use std::sync::Arc;

use holdfast_protocol::agent::{
    AgentId, ConversationInfo, ConversationState, Event, MessageId, Seq, SiteId,
};
use holdfast_protocol::visitor::VisitorEvent;

use super::Rules;
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::reads::{self, agent_key, visitor_key};
use crate::store::sql::args;

impl Rules<'_> {
    /// The newest head of a log known without reading the database: this
    /// op's, the batch's so far, or the committed one.
    pub(super) fn known_head(&self, key: &str) -> Option<Seq> {
        self.op
            .heads
            .get(key)
            .or_else(|| self.batch.heads.get(key))
            .or_else(|| self.committed_heads.get(key))
            .copied()
    }

    pub(super) fn next_seq(&mut self, key: String) -> Result<Seq, StoreError> {
        let cur = match self.known_head(&key) {
            Some(h) => h,
            None => self.lock_head(&key)?,
        };
        let next = cur + 1;
        self.op.heads.insert(key, next);
        Ok(next)
    }

    /// A recipient's committed head, read with its row locked until the
    /// batch commits. With one writer (SQLite) the lock changes nothing;
    /// with several nodes on one PostgreSQL database it is what keeps each
    /// log gap-free and in order: a second node wanting this recipient
    /// waits here for the first one's COMMIT and then reads its head, so
    /// seqs are handed out in commit order. The upsert creates the row for
    /// a new recipient, so two nodes cannot both start it at 1.
    fn lock_head(&self, key: &str) -> Result<Seq, StoreError> {
        self.conn
            .query_one(
                "INSERT INTO log_heads (recipient, head) VALUES (?1, 0) \
                 ON CONFLICT(recipient) DO UPDATE SET head = log_heads.head RETURNING head",
                &args![key],
            )?
            .get(0)
    }

    pub(super) fn agent_event(
        &mut self,
        agent: AgentId,
        event: Event,
        at: i64,
    ) -> Result<(), StoreError> {
        let seq = self.next_seq(agent_key(agent))?;
        let bytes = reads::encode_agent_event(&event)?;
        self.conn.execute(
            "INSERT INTO agent_events (agent_id, seq, event, at_ms) VALUES (?1, ?2, ?3, ?4)",
            &args![agent, seq, bytes, at],
        )?;
        self.op.effects.push(Effect::AgentEvent {
            agent,
            seq,
            event: Arc::new(event),
        });
        Ok(())
    }

    pub(super) fn visitor_event(
        &mut self,
        visitor: &str,
        event: VisitorEvent,
        agent_message: Option<MessageId>,
        at: i64,
    ) -> Result<(), StoreError> {
        let seq = self.next_seq(visitor_key(visitor))?;
        let text = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let conv = match &event {
            VisitorEvent::Message(m) => m.conversation,
            VisitorEvent::Conversation(c) => c.id,
        };
        self.conn.execute(
            "INSERT INTO visitor_events (visitor_id, seq, event, conversation_id, agent_message, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &args![visitor, seq, text, conv, agent_message, at],
        )?;
        self.op.effects.push(Effect::VisitorEvent {
            visitor: visitor.to_string(),
            seq,
            event: Arc::new(event),
        });
        Ok(())
    }

    pub(super) fn site_agents(&self, site: SiteId) -> Result<Vec<AgentId>, StoreError> {
        Ok(reads::agents_of_site(self.conn, site)?
            .into_iter()
            .filter(|a| !a.disabled)
            .map(|a| a.id)
            .collect())
    }

    /// Supervisors and admins of a site, who watch every chat live.
    pub(super) fn overseers(&self, site: SiteId) -> Result<Vec<AgentId>, StoreError> {
        Ok(reads::agents_of_site(self.conn, site)?
            .into_iter()
            .filter(|a| !a.disabled && a.role.oversees())
            .map(|a| a.id)
            .collect())
    }

    /// Who receives a conversation's messages: its agent and the site's
    /// supervisors once assigned, every agent of the site while it waits.
    pub(super) fn message_recipients(
        &self,
        c: &ConversationInfo,
    ) -> Result<Vec<AgentId>, StoreError> {
        match (c.state, c.assigned) {
            (ConversationState::Active | ConversationState::Closed, Some(a)) => {
                let mut v = self.overseers(c.site)?;
                if !v.contains(&a) {
                    v.push(a);
                }
                Ok(v)
            }
            _ => self.site_agents(c.site),
        }
    }
}
