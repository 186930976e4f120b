//! The moves every conversation rule is made of: open a conversation, change
//! its state or owner and tell everyone, post a message or a system line,
//! and catch a new owner up on the history. Kept in one place so that every
//! rule announces the same change the same way.

use holdfast_protocol::agent::{
    AgentId, Author, ChatMessage, ConversationId, ConversationInfo, ConversationState, Event,
    MessageId, Presence, SiteId, TeamMember,
};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::Notice;
use holdfast_protocol::visitor::VisitorEvent;

use super::{Content, Rules};
use crate::store::StoreError;
use crate::store::effect::{Effect, VisitorChange};
use crate::store::reads::{self, AUTHOR_AGENT, AUTHOR_VISITOR, state_to_int};
use crate::store::sql::args;

impl Rules<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_conversation(
        &mut self,
        site: SiteId,
        visitor: &str,
        state: ConversationState,
        assigned: Option<AgentId>,
        email: Option<String>,
        group: Option<&str>,
        now: i64,
    ) -> Result<ConversationId, StoreError> {
        let id: u64 = self
            .conn
            .query_one(
                "INSERT INTO conversations (site_id, visitor_id, state, assigned_agent, opened_ms, updated_ms, contact_email, group_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7) RETURNING id",
                &args![site, visitor, state_to_int(state), assigned, now, email, group],
            )?
            .get(0)?;
        if state == ConversationState::Queued {
            self.entered_queue(site, id, now)?;
        }
        self.op.effects.push(Effect::VisitorChanged {
            visitor: visitor.to_string(),
            change: VisitorChange::Conversation(Some(id)),
        });
        Ok(id)
    }

    /// Conversation `id` of `site` (re)entered the queue now: when, and at
    /// which place (the waiting chats of the site for the same group opened
    /// before it, plus one). Its wait, once taken, is a sample for the
    /// estimate of its group's queue (10.14, 10.23).
    pub(super) fn entered_queue(
        &mut self,
        site: SiteId,
        id: ConversationId,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE conversations SET queued_ms = ?3, queued_place = \
             (SELECT COUNT(*) FROM conversations q, conversations c WHERE c.id = ?1 AND q.site_id = ?2 \
              AND q.state = 0 AND q.id <= ?1 AND COALESCE(q.group_key, '') = COALESCE(c.group_key, '')) \
             WHERE id = ?1",
            &args![id, site, now],
        )?;
        Ok(())
    }

    /// Conversation `id` left the queue for an agent now.
    pub(super) fn left_queue(&mut self, id: ConversationId, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE conversations SET taken_ms = ?2 WHERE id = ?1",
            &args![id, now],
        )?;
        Ok(())
    }

    /// Tell every site agent and the visitor about a conversation's state.
    pub(super) fn announce(
        &mut self,
        id: ConversationId,
        now: i64,
    ) -> Result<ConversationInfo, StoreError> {
        let c = reads::conversation(self.conn, id)?
            .ok_or_else(|| StoreError::Corrupt(format!("conversation {id} vanished")))?;
        for a in self.site_agents(c.site)? {
            self.agent_event(a, Event::Conversation(c.clone()), now)?;
        }
        let view = reads::conversation_view(&c);
        self.visitor_event(&c.visitor, VisitorEvent::Conversation(view), None, now)?;
        Ok(c)
    }

    /// Move a conversation to `state` and `assigned`, and tell everyone. A
    /// change of owner counts as a handoff (the next owner needs the
    /// history) and updates both agents' load on the team panel.
    pub(super) fn set_state(
        &mut self,
        c: &ConversationInfo,
        state: ConversationState,
        assigned: Option<AgentId>,
        now: i64,
    ) -> Result<ConversationInfo, StoreError> {
        let handoff = c.assigned.is_some() && c.assigned != assigned;
        self.conn.execute(
            "UPDATE conversations SET state = ?2, assigned_agent = ?3, updated_ms = ?4, \
             handoffs = handoffs + ?5 WHERE id = ?1",
            &args![c.id, state_to_int(state), assigned, now, handoff],
        )?;
        if c.state == ConversationState::Queued && state == ConversationState::Active {
            self.left_queue(c.id, now)?;
        } else if c.state != ConversationState::Queued && state == ConversationState::Queued {
            self.entered_queue(c.site, c.id, now)?;
        }
        let updated = self.announce(c.id, now)?;
        // A visitor has at most one open conversation (a new one is opened
        // only when there is none), so this one's state says which is open.
        let open = (updated.state != ConversationState::Closed).then_some(updated.id);
        self.op.effects.push(Effect::VisitorChanged {
            visitor: updated.visitor.clone(),
            change: VisitorChange::Conversation(open),
        });
        let load_changed = c.assigned != assigned
            || (c.state == ConversationState::Active) != (state == ConversationState::Active);
        if load_changed {
            for a in [c.assigned, assigned].into_iter().flatten() {
                self.team_effect(a)?;
            }
        }
        Ok(updated)
    }

    /// The agent's team row as committed, for the hub to pass on.
    pub(super) fn team_effect(&mut self, agent: AgentId) -> Result<(), StoreError> {
        let Some(row) = reads::agent_by_id(self.conn, agent)? else {
            return Ok(());
        };
        let active = reads::agent_load(self.conn, agent)?;
        self.op.effects.push(Effect::Team {
            site: row.site,
            member: TeamMember {
                agent,
                name: row.display_name,
                role: row.role,
                presence: Presence::Offline,
                active,
                capacity: row.capacity,
                disabled: row.disabled,
            },
        });
        Ok(())
    }

    /// A new owner gets the history it has not seen: every message if the
    /// chat changed hands before (its messages then went only to the owner
    /// and the supervisors), or if the agent was created after it opened.
    pub(super) fn backfill(
        &mut self,
        c: &ConversationInfo,
        agent: AgentId,
        now: i64,
    ) -> Result<(), StoreError> {
        let row: Option<(i64, i64)> = self
            .conn
            .query_opt(
                "SELECT a.created_ms, c.handoffs FROM agents a, conversations c WHERE a.id = ?1 AND c.id = ?2",
                &args![agent, c.id],
            )?
            .map(|r| Ok::<_, StoreError>((r.get(0)?, r.get(1)?)))
            .transpose()?;
        let Some((created, handoffs)) = row else {
            return Ok(());
        };
        if created <= c.opened_at_ms && handoffs == 0 {
            return Ok(());
        }
        for m in reads::recent_messages(self.conn, c.id, 200)? {
            self.agent_event(agent, Event::Message(m), now)?;
        }
        Ok(())
    }

    /// Store a message and send it to its recipients. `internal` lines go to
    /// agents only: no visitor event is written for them, and visitor
    /// snapshots skip them.
    pub(super) fn post(
        &mut self,
        c: &ConversationInfo,
        author: Author,
        content: Content<'_>,
        client_id: MsgId,
        now: i64,
        internal: bool,
    ) -> Result<MessageId, StoreError> {
        let Content { body, attachment } = content;
        let (kind, agent) = match &author {
            Author::Agent { agent, .. } => (AUTHOR_AGENT, Some(*agent)),
            Author::Visitor { .. } => (AUTHOR_VISITOR, None),
            Author::System => (reads::AUTHOR_SYSTEM, None),
            Author::Note { agent, .. } => (reads::AUTHOR_NOTE, Some(*agent)),
        };
        // A note is internal whatever the caller said.
        let internal = internal || matches!(author, Author::Note { .. });
        let id: u64 = self
            .conn
            .query_one(
                "INSERT INTO messages (conversation_id, client_id, author_kind, author_agent, body, at_ms, internal, \
                 attach_id, attach_name, attach_mime, attach_size, attach_image) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
                &args![
                    c.id,
                    &client_id.0[..],
                    kind,
                    agent,
                    body,
                    now,
                    internal,
                    attachment.map(|a| a.id.as_str()),
                    attachment.map(|a| a.name.as_str()),
                    attachment.map(|a| a.mime.as_str()),
                    attachment.map(|a| i64::try_from(a.size).unwrap_or(i64::MAX)),
                    attachment.map(|a| i64::from(a.image))
                ],
            )?
            .get(0)?;
        self.conn.execute(
            "UPDATE conversations SET updated_ms = ?2 WHERE id = ?1",
            &args![c.id, now],
        )?;
        let msg = ChatMessage {
            conversation: c.id,
            message: id,
            client_id,
            author,
            body: body.to_string(),
            at_ms: now,
            attachment: attachment.cloned(),
        };
        let vmsg = if internal {
            None
        } else {
            reads::visitor_message(&msg)
        };
        for a in self.message_recipients(c)? {
            self.agent_event(a, Event::Message(msg.clone()), now)?;
        }
        if let Some(vmsg) = vmsg {
            let agent_msg = agent.map(|_| id);
            self.visitor_event(&c.visitor, VisitorEvent::Message(vmsg), agent_msg, now)?;
        }
        Ok(id)
    }

    /// Post a system line; agent-only notices stay internal.
    pub(super) fn system_line(
        &mut self,
        c: &ConversationInfo,
        notice: &Notice,
        now: i64,
    ) -> Result<MessageId, StoreError> {
        // System lines have no client; a fresh id keeps the column unique.
        let id = MsgId::generate(u64::try_from(now).unwrap_or(0), &mut rand::rng());
        self.post(
            c,
            Author::System,
            Content::text(&notice.to_body()),
            id,
            now,
            notice.agents_only(),
        )
    }

    pub(super) fn joined(
        &mut self,
        c: &ConversationInfo,
        name: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.system_line(
            c,
            &Notice::Joined {
                agent: name.to_owned(),
            },
            now,
        )
        .map(drop)
    }
}
